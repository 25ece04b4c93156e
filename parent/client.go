package parent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Errors of the client.
var (
	// ErrConnLost is matched by the error of every call that was in flight on
	// a connection when it broke (the enclave closed it, restarted, or sent
	// bytes that are not protocol v1). The error also wraps the cause.
	// The next call dials a new connection.
	ErrConnLost = errors.New("parent: connection to the enclave lost")
	// ErrClientClosed is returned by calls on a closed Client.
	ErrClientClosed = errors.New("parent: client closed")
	// ErrProtocol is wrapped, together with ErrConnLost, when the enclave
	// sent something protocol v1 does not allow on a client connection: an
	// envelope that fails to decode, a request, or a response to a request
	// id that was never issued.
	ErrProtocol = errors.New("parent: protocol violation by the enclave")
)

// Defaults and limits of Options.
const (
	DefaultPoolSize    = 2
	MaxPoolSize        = 64
	DefaultCallTimeout = 30 * time.Second
	DefaultDialTimeout = 10 * time.Second
	// maxRemoteMessage bounds the message of a remote error, in bytes.
	maxRemoteMessage = 256
)

// readBufSize is the read buffer of each client connection. A response
// that fits it whole is read by the waiting caller itself (peekFrame);
// a larger one goes through the background reader, one hand-off more.
const readBufSize = 16 << 10

// maxFreeChans is how many result channels a connection keeps for reuse.
const maxFreeChans = 16

// silentProbeTimeout bounds the health probe sent on a connection after a
// call timed out on it with nothing at all received since the call was
// sent. A variable for tests.
var silentProbeTimeout = 5 * time.Second

// maxAbandoned is how many requests a connection remembers after their
// callers gave up, so that their late responses are recognised and dropped.
// Past it the connection is recycled. A variable for tests.
var maxAbandoned = 4096

// Options configures a Client. The zero value is valid: every zero field
// takes the default documented on it.
type Options struct {
	// PoolSize is the number of connections the client keeps to the
	// enclave; calls are spread over them round-robin. 1..MaxPoolSize (64);
	// 0 means DefaultPoolSize (2).
	PoolSize int
	// MaxFrameSize is the largest request or response payload in bytes,
	// envelope included, 1..protocol.MaxFrameSizeLimit (64 MiB); 0 means
	// protocol.DefaultMaxFrameSize (1 MiB). A larger response breaks the
	// connection it arrived on.
	MaxFrameSize int
	// CallTimeout bounds every call whose context has no deadline, so that a
	// vanished enclave never hangs a caller. 0 means DefaultCallTimeout
	// (30s); negative means no bound beyond the caller's context.
	CallTimeout time.Duration
	// DialTimeout bounds each connection attempt, within the caller's
	// context. 0 means DefaultDialTimeout (10s).
	DialTimeout time.Duration
	// Logger receives connection events (breaks, redials). nil means
	// slog.Default().
	Logger *slog.Logger
	// Dial opens a connection to addr. nil means transport.Dial. Tests
	// use it to put a net.Pipe under the client.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o Options) Validate() error {
	switch {
	case o.PoolSize < 0 || o.PoolSize > MaxPoolSize:
		return fieldErr("Options.PoolSize", o.PoolSize, "outside 1..%d (0 means the default, %d)", MaxPoolSize, DefaultPoolSize)
	case o.MaxFrameSize < 0 || o.MaxFrameSize > protocol.MaxFrameSizeLimit:
		return fieldErr("Options.MaxFrameSize", o.MaxFrameSize, "outside 1..%d bytes (0 means the default, %d)", protocol.MaxFrameSizeLimit, protocol.DefaultMaxFrameSize)
	case o.DialTimeout < 0:
		return fieldErr("Options.DialTimeout", o.DialTimeout, "negative (0 means the default, %v)", DefaultDialTimeout)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.PoolSize == 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = protocol.DefaultMaxFrameSize
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dial == nil {
		o.Dial = transport.Dial
	}
	return o
}

// Client calls an enclave server over a small pool of connections. It is
// safe for concurrent use. Close it to release its connections.
type Client struct {
	addr string
	opts Options
	next atomic.Uint64 // round-robin cursor

	// life ends when Close is called; it cancels dials in progress.
	life     context.Context
	shutdown context.CancelFunc

	mu     sync.Mutex
	closed bool
	slots  []slot
	wg     sync.WaitGroup // reader and probe goroutines
}

type slot struct {
	conn    *clientConn
	dialing chan struct{} // non-nil while a dial for this slot runs
}

// Dial connects to the enclave server at addr ("vsock://16:5000",
// "tcp://127.0.0.1:5000") and returns a Client. The first connection is
// opened before Dial returns, so a wrong address fails here; the others are
// opened on first use. ctx bounds only the connection set-up.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if _, err := transport.ParseAddr(addr); err != nil {
		return nil, err
	}
	c := &Client{addr: addr, opts: opts.withDefaults()}
	c.life, c.shutdown = context.WithCancel(context.Background())
	c.slots = make([]slot, c.opts.PoolSize)
	cc, err := c.dial(ctx)
	if err != nil {
		c.shutdown()
		return nil, err
	}
	c.mu.Lock()
	c.slots[0].conn = cc
	c.startReader(cc)
	c.mu.Unlock()
	return c, nil
}

// Addr returns the address the client dials.
func (c *Client) Addr() string { return c.addr }

// Close closes every connection; calls in flight fail with ErrClientClosed.
// It waits for the client's goroutines to end and is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.shutdown() // ends dials in progress
	var conns []*clientConn
	for i := range c.slots {
		if cc := c.slots[i].conn; cc != nil {
			conns = append(conns, cc)
			c.slots[i].conn = nil
		}
	}
	c.mu.Unlock()
	for _, cc := range conns {
		cc.fail(ErrClientClosed)
	}
	c.wg.Wait()
	return nil
}

// Call encodes req as CBOR (nil sends an empty body), calls method and
// decodes the response body into resp (nil discards it). Errors sent by the
// enclave match their protocol sentinels with errors.Is.
func (c *Client) Call(ctx context.Context, method string, req, resp any) error {
	var body []byte
	if req != nil {
		b, err := protocol.Marshal(req)
		if err != nil {
			return fmt.Errorf("parent: encoding %s request: %w", method, err)
		}
		body = b
	}
	out, err := c.CallRaw(ctx, method, body)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	if err := protocol.Unmarshal(out, resp); err != nil {
		return fmt.Errorf("parent: decoding %s response: %w", method, err)
	}
	return nil
}

// CallRaw sends body as the request of method and returns the response body.
// The call ends at the first of: the response, ctx's end (ctx.Err() is
// returned, wrapped), the connection breaking (ErrConnLost) or Close
// (ErrClientClosed). A remote error is a *protocol.RemoteError.
func (c *Client) CallRaw(ctx context.Context, method string, body []byte) ([]byte, error) {
	if method == "" || len(method) > protocol.MaxMethodLen {
		return nil, fmt.Errorf("parent: method name must be 1..%d bytes, got %d", protocol.MaxMethodLen, len(method))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("parent: call %s: %w", method, err)
	}
	b := callBound{ctx: ctx}
	if _, ok := ctx.Deadline(); !ok && c.opts.CallTimeout > 0 {
		// CallTimeout bounds the call: its connection's one timer ends it
		// at the deadline, so no timer or derived context is made per call.
		b.deadline = time.Now().Add(c.opts.CallTimeout)
	}
	defer b.release()
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(&b)
		if err != nil {
			return nil, err
		}
		out, err := cc.callBounded(&b, method, body)
		if ns, ok := err.(errNotSent); ok {
			if attempt == 0 && !errors.Is(ns.err, ErrClientClosed) {
				continue // the connection broke before the request left: once more on a fresh one
			}
			return nil, ns.err
		}
		return out, err
	}
}

// callBound is how a call ends other than by its response: its context,
// and, when that context has no deadline, the Client's CallTimeout as a
// deadline that the connection's timer enforces (clientConn.expire)
// instead of a timer and a derived context per call.
type callBound struct {
	ctx      context.Context
	deadline time.Time // zero unless CallTimeout applies; also the write deadline

	derived context.Context // ctx bounded by deadline, made only to dial
	cancel  context.CancelFunc
}

// err is the context's error, or context.DeadlineExceeded once the
// deadline has passed.
func (b *callBound) err() error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if !b.deadline.IsZero() && !time.Now().Before(b.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// context returns a context that ends when the call must: for the rarely
// taken paths (waiting for a dial, dialing) that need one.
func (b *callBound) context() context.Context {
	if b.deadline.IsZero() {
		return b.ctx
	}
	if b.derived == nil {
		b.derived, b.cancel = context.WithDeadline(b.ctx, b.deadline)
	}
	return b.derived
}

func (b *callBound) release() {
	if b.cancel != nil {
		b.cancel()
	}
}

// conn returns a healthy connection of the pool, dialing one into the next
// slot if that slot is empty or broken.
func (c *Client) conn(b *callBound) (*clientConn, error) {
	i := int(c.next.Add(1) % uint64(len(c.slots)))
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		s := &c.slots[i]
		if s.conn != nil && !s.conn.broken() {
			cc := s.conn
			c.mu.Unlock()
			return cc, nil
		}
		if ch := s.dialing; ch != nil {
			c.mu.Unlock()
			ctx := b.context()
			select {
			case <-ch:
				continue
			case <-c.life.Done():
				return nil, ErrClientClosed
			case <-ctx.Done():
				return nil, fmt.Errorf("parent: waiting for a connection to %s: %w", c.addr, ctx.Err())
			}
		}
		ch := make(chan struct{})
		s.dialing = ch
		old := s.conn
		s.conn = nil
		c.mu.Unlock()
		if old != nil {
			c.opts.Logger.Debug("enclavekit: replacing broken connection", "addr", c.addr, "err", old.err())
		}

		cc, err := c.dial(b.context())

		c.mu.Lock()
		s.dialing = nil
		close(ch)
		if c.closed {
			c.mu.Unlock()
			if err == nil {
				cc.nc.Close()
			}
			return nil, ErrClientClosed
		}
		if err == nil {
			s.conn = cc
			c.startReader(cc)
		}
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return cc, nil
	}
}

func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	defer context.AfterFunc(c.life, cancel)()
	nc, err := c.opts.Dial(dctx, c.addr)
	if err != nil {
		return nil, fmt.Errorf("parent: dialing enclave: %w", err)
	}
	cc, err := newClientConn(nc, c.opts.MaxFrameSize)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cc.spawn = c.spawn
	return cc, nil
}

// spawn runs f in a goroutine that Close waits for; it reports false, and
// runs nothing, once the Client is closed.
func (c *Client) spawn(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// startReader starts cc's background reader, which holds the reader role
// until the first call takes it. c.mu must be held and c not closed, so
// that Close's wait sees every reader.
func (c *Client) startReader(cc *clientConn) {
	cc.mu.Lock()
	cc.reading, cc.bg = true, true
	cc.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cc.background()
	}()
}

// result is what the reader (or the connection's deadline timer) hands a
// waiting call.
type result struct {
	body []byte
	err  error
}

// errCallExpired is the result the connection's timer hands a call whose
// deadline (CallTimeout) has passed; the call reports
// context.DeadlineExceeded.
var errCallExpired = errors.New("call deadline passed")

// pendingCall is a request in flight: where its result goes, and the
// deadline the connection's timer enforces (zero: none, the caller's
// context bounds it).
type pendingCall struct {
	ch       chan result // nil: abandoned by its caller
	deadline time.Time
	sent     bool // its caller waits for the response (it may be handed the reader role)
}

// clientConn is one connection with requests in flight. Whoever holds its
// reader role (a waiting caller, or the background reader) delivers the
// responses by id; writers take wsem in turn.
type clientConn struct {
	nc   net.Conn
	fw   *protocol.FrameWriter
	fr   *protocol.FrameReader
	br   *bufio.Reader    // under fr; peeked by the reader role (peekFrame)
	wsem chan struct{}    // 1-slot semaphore guarding fw and nc writes
	done chan struct{}    // closed when the connection is broken
	free chan chan result // empty result channels for reuse (recycle)

	mu        sync.Mutex
	nextID    uint64
	pending   map[uint64]pendingCall
	abandoned int
	cause     error // set once, before done is closed
	// timer ends the calls whose deadline has passed (expire); it is set
	// for the earliest deadline in pending, armed is when it fires (zero
	// when it is stopped).
	timer *time.Timer
	armed time.Time

	// The reader role: at most one goroutine reads the connection. It is
	// held by a caller waiting for its response (leaderID, the leader/
	// follower read: no hand-off for the leader's own response), or by the
	// background reader (bg), which reads while no caller does so that a
	// connection that breaks while idle is noticed, and which reads the
	// frames too large to peek. reading is whether anyone holds it.
	reading  bool
	leaderID uint64 // the caller holding (or being handed) the role; 0: none
	bg       bool   // the background reader holds the role
	bgStop   bool   // a caller asked the background reader to pass the role on
	bgPeek   bool   // the background reader is in peekFrame (a read deadline may interrupt it)
	bgMust   bool   // the background reader must read the next frame (too large to peek) before passing the role on
	// idle starts the background reader once the role has been free for
	// idleReadDelay.
	idle *time.Timer

	// lastFrame is when the last frame arrived (UnixNano), probing whether
	// a silent-connection probe runs; spawn starts it under the Client's
	// WaitGroup (false once the Client is closed).
	lastFrame atomic.Int64
	probing   atomic.Bool
	// idleProbe checks, before a request is sent on a connection that no
	// one reads, that the enclave has not closed it meanwhile.
	idleProbe *closedProbe
	spawn     func(func()) bool
}

func newClientConn(nc net.Conn, maxFrame int) (*clientConn, error) {
	fw, err := protocol.NewFrameWriter(nc, maxFrame)
	if err != nil {
		return nil, err
	}
	// Buffered, so that a response's length prefix and payload, which
	// arrive together, take one read system call rather than two.
	br := bufio.NewReaderSize(nc, readBufSize)
	fr, err := protocol.NewFrameReader(br, maxFrame)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{
		idleProbe: newClosedProbe(nc),
		nc:        nc,
		fw:        fw,
		fr:        fr,
		br:        br,
		wsem:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		free:      make(chan chan result, maxFreeChans),
		pending:   make(map[uint64]pendingCall),
	}
	// Made here, with the connection, so that it belongs to the same
	// testing/synctest bubble as the connection's channels and reader.
	cc.timer = time.AfterFunc(time.Hour, cc.expire)
	cc.timer.Stop()
	cc.idle = time.AfterFunc(time.Hour, cc.idleRead)
	cc.idle.Stop()
	return cc, nil
}

func (cc *clientConn) broken() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

func (cc *clientConn) err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.cause
}

// fail breaks the connection with cause (the first cause wins) and wakes
// every call in flight.
func (cc *clientConn) fail(cause error) {
	cc.mu.Lock()
	if cc.cause != nil {
		cc.mu.Unlock()
		return
	}
	cc.cause = cause
	cc.pending = nil
	close(cc.done)
	cc.timer.Stop()
	cc.idle.Stop()
	cc.mu.Unlock()
	cc.nc.Close()
}

// lostErr is the error of a call that was on cc when it broke.
func (cc *clientConn) lostErr() error {
	cause := cc.err()
	if errors.Is(cause, ErrClientClosed) {
		return ErrClientClosed
	}
	return cause
}

var errWriteInterrupted = errors.New("request write interrupted by the caller's context")

// call sends one request and waits for its response until ctx ends.
func (cc *clientConn) call(ctx context.Context, method string, body []byte) ([]byte, error) {
	return cc.callBounded(&callBound{ctx: ctx}, method, body)
}

func (cc *clientConn) callBounded(b *callBound, method string, body []byte) ([]byte, error) {
	req := protocol.Envelope{Version: protocol.Version, Method: method, Body: body}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("parent: encoding request: %w", err)
	}
	if err := cc.checkIdle(); err != nil {
		return nil, err
	}
	ch := cc.resultChan()
	cc.mu.Lock()
	if cc.cause != nil {
		cc.mu.Unlock()
		return nil, errNotSent{cc.lostErr()}
	}
	cc.nextID++
	id := cc.nextID
	req.ID = id
	cc.pending[id] = pendingCall{ch: ch, deadline: b.deadline}
	if !b.deadline.IsZero() {
		cc.armLocked(b.deadline)
	}
	cc.mu.Unlock()

	if err := cc.write(b, id, ch, &req); err != nil {
		return nil, err
	}
	sent := time.Now().UnixNano()
	return cc.await(b, id, ch, method, sent)
}

// checkIdle fails a connection that no caller reads (the reader role is
// free between calls, until idleReadDelay starts the background reader,
// which may not have run yet) if the enclave closed it meanwhile, before a
// request is sent on it: the call is then made on a fresh connection
// (errNotSent). A restarted enclave so costs no failed call.
func (cc *clientConn) checkIdle() error {
	cc.mu.Lock()
	idle := (!cc.reading || cc.bg) && cc.cause == nil
	cc.mu.Unlock()
	if !idle {
		return nil
	}
	if err := cc.idleProbe.closed(); err != nil {
		cc.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
		return errNotSent{cc.lostErr()}
	}
	return nil
}

// await waits for the response to request id, which has just been sent:
// as the reader (the leader) if no one reads the connection, else on ch
// until the response, or the reader role, is handed over.
func (cc *clientConn) await(b *callBound, id uint64, ch chan result, method string, sent int64) ([]byte, error) {
	cc.mu.Lock()
	if p, ok := cc.pending[id]; ok && p.ch != nil {
		p.sent = true
		cc.pending[id] = p
		if !cc.reading {
			cc.reading = true
			cc.leaderID = id
			cc.mu.Unlock()
			return cc.lead(b, id, ch, method, sent)
		}
		if cc.bg && !cc.bgStop {
			// The background reader passes the role on to a waiting
			// call; interrupting its peek loses no byte.
			cc.bgStop = true
			if cc.bgPeek {
				cc.nc.SetReadDeadline(time.Unix(1, 0))
			}
		}
	}
	cc.mu.Unlock()
	select {
	case r := <-ch:
		if r.err == errTakeRole {
			return cc.lead(b, id, ch, method, sent)
		}
		cc.recycle(ch)
		return cc.outcome(r, method, sent)
	case <-cc.done:
		// The reader may have delivered just before breaking.
		select {
		case r := <-ch:
			if r.err != errTakeRole {
				cc.recycle(ch)
				return cc.outcome(r, method, sent)
			}
		default:
		}
		return nil, cc.lostErr()
	case <-b.ctx.Done():
		return nil, cc.gaveUp(id, method, b.ctx.Err(), sent)
	}
}

// errTakeRole is handed to a waiting call to make it the reader.
var errTakeRole = errors.New("take the reader role")

// lead reads the connection for request id, whose caller holds the reader
// role, delivering the other calls' responses, until its own response
// arrives, its call ends, or the connection breaks; then it passes the
// role on. Frames are read whole from the read buffer (peekFrame), so a
// read interrupted by the call's end leaves the stream intact for the next
// reader.
func (cc *clientConn) lead(b *callBound, id uint64, ch chan result, method string, sent int64) ([]byte, error) {
	var (
		stop  func() bool
		fired chan struct{}
	)
	if b.ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(b.ctx, func() {
			cc.nc.SetReadDeadline(time.Unix(1, 0))
			close(fired)
		})
	}
	// unwatch ends the context watch before the role is passed on, so
	// that it never interrupts the next reader.
	unwatch := func() {
		if stop != nil && !stop() {
			<-fired
		}
	}
	cc.nc.SetReadDeadline(b.deadline)
	for {
		frame, big, err := cc.peekFrame()
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := b.err(); cerr != nil {
				unwatch()
				return nil, cc.gaveUp(id, method, cerr, sent) // passes the role on
			}
			cc.nc.SetReadDeadline(b.deadline)
			continue
		}
		if err != nil {
			unwatch()
			cc.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
			return nil, cc.lostErr()
		}
		if big {
			// Too large to read without consuming part of it: the
			// background reader reads it, and this call waits as the
			// others do.
			unwatch()
			cc.nc.SetReadDeadline(time.Time{})
			cc.mu.Lock()
			if cc.pending == nil {
				cc.mu.Unlock()
				return nil, cc.lostErr()
			}
			cc.leaderID = 0
			cc.bg, cc.bgMust = true, true
			if !b.deadline.IsZero() {
				// The timer skipped this call while it led, and may not
				// be set for its deadline any more: it ends the call now
				// that the call waits as the others do.
				cc.armLocked(b.deadline)
			}
			cc.mu.Unlock()
			cc.startBackground()
			return cc.await(b, id, ch, method, sent)
		}
		r, mine, ok := cc.dispatch(frame, id)
		if !ok {
			unwatch()
			return nil, cc.lostErr()
		}
		if mine {
			unwatch()
			cc.mu.Lock()
			cc.releaseLocked(id)
			cc.mu.Unlock()
			cc.recycle(ch)
			return cc.outcome(r, method, sent)
		}
	}
}

// releaseLocked passes the reader role, held by the caller of request
// self (0: the background reader), to a call waiting for its response, or
// frees it (the background reader takes it if it stays free for
// idleReadDelay). cc.mu is held.
func (cc *clientConn) releaseLocked(self uint64) {
	cc.leaderID = 0
	if cc.pending == nil {
		cc.reading = false
		return
	}
	for id, p := range cc.pending {
		if id != self && p.ch != nil && p.sent {
			cc.leaderID = id
			p.ch <- result{err: errTakeRole} // never blocks: nothing else is sent to p.ch while no one reads
			return
		}
	}
	cc.reading = false
	cc.idle.Reset(idleReadDelay)
}

// idleReadDelay is how long the reader role stays free before the
// background reader takes it. A variable for tests.
var idleReadDelay = time.Millisecond

// idleRead starts the background reader if the reader role is free.
func (cc *clientConn) idleRead() {
	if cc.claimForBackground() {
		cc.startBackground()
	}
}

// claimForBackground gives the reader role to the background reader if no
// one holds it and the connection works.
func (cc *clientConn) claimForBackground() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pending == nil || cc.reading {
		return false
	}
	cc.reading, cc.bg = true, true
	return true
}

// startBackground runs the background reader, which holds the role.
func (cc *clientConn) startBackground() {
	if cc.spawn != nil && cc.spawn(cc.background) {
		return
	}
	if cc.spawn == nil {
		go cc.background()
		return
	}
	// The Client is closed (its Close fails this connection too): no one
	// may read on.
	cc.fail(ErrClientClosed)
}

// resultChan returns a result channel for a call: a recycled one, or a new
// one.
func (cc *clientConn) resultChan() chan result {
	select {
	case ch := <-cc.free:
		return ch
	default:
		return make(chan result, 1)
	}
}

// recycle keeps ch, from which its call has just received its one result
// (every request gets at most one, from the reader or from expire), for
// another call. A call that ended otherwise drops its channel: a result
// may still be on its way. The channels are kept per connection, never
// shared between connections: a channel must stay in the testing/synctest
// bubble it was made in, and a connection's calls all run in the bubble of
// its own channels and reader.
func (cc *clientConn) recycle(ch chan result) {
	select {
	case cc.free <- ch:
	default:
	}
}

// outcome is what a call returns for the result it was handed.
func (cc *clientConn) outcome(r result, method string, sent int64) ([]byte, error) {
	switch {
	case r.err == errCallExpired:
		// expire has abandoned the request already.
		return nil, cc.timedOut(method, context.DeadlineExceeded, sent)
	case r.err != nil:
		return nil, r.err
	}
	return r.body, nil
}

// gaveUp abandons request id after the call ended with err before its
// response arrived. If the call was handed the reader role meanwhile, it
// passes the role on in the same critical section that abandons the
// request: once abandoned, the call can no longer be handed the role.
func (cc *clientConn) gaveUp(id uint64, method string, err error, sent int64) error {
	cc.mu.Lock()
	if cc.leaderID == id {
		cc.releaseLocked(id)
	}
	tooMany := cc.abandonLocked(id)
	cc.mu.Unlock()
	if tooMany {
		cc.fail(fmt.Errorf("%w: %d requests abandoned without a response", ErrConnLost, maxAbandoned))
	}
	return cc.timedOut(method, err, sent)
}

// timedOut is the error of a call that ended with err, its request
// abandoned; a deadline with nothing received since the request was sent
// makes the connection suspect.
func (cc *clientConn) timedOut(method string, err error, sent int64) error {
	if errors.Is(err, context.DeadlineExceeded) && cc.lastFrame.Load() < sent {
		cc.suspect()
	}
	return fmt.Errorf("parent: call %s: %w", method, err)
}

// armLocked sets the connection's timer to fire at t unless it already
// fires earlier.
func (cc *clientConn) armLocked(t time.Time) {
	if !cc.armed.IsZero() && !t.Before(cc.armed) {
		return
	}
	cc.armed = t
	cc.timer.Reset(time.Until(t))
}

// expire runs when the connection's timer fires: it hands every call whose
// deadline has passed errCallExpired and abandons its request (a late
// response is recognised and dropped), then sets the timer for the
// earliest deadline left.
func (cc *clientConn) expire() {
	cc.mu.Lock()
	cc.armed = time.Time{}
	if cc.pending == nil {
		cc.mu.Unlock()
		return
	}
	now := time.Now()
	var next time.Time
	for id, p := range cc.pending {
		switch {
		case p.ch == nil || p.deadline.IsZero() || id == cc.leaderID:
			// The leader ends its own call at its deadline.
		case !now.Before(p.deadline):
			p.ch <- result{err: errCallExpired} // never blocks: the one result of p.ch
			cc.pending[id] = pendingCall{}
			cc.abandoned++
		case next.IsZero() || p.deadline.Before(next):
			next = p.deadline
		}
	}
	if !next.IsZero() {
		cc.armLocked(next)
	}
	tooMany := cc.abandoned > maxAbandoned
	cc.mu.Unlock()
	if tooMany {
		cc.fail(fmt.Errorf("%w: %d requests abandoned without a response", ErrConnLost, maxAbandoned))
	}
}

// suspect starts a probe of a connection on which a call timed out with
// nothing at all received since it was sent: the enclave may be hung with
// the connection still open, and then every call routed to it would time
// out. A slow handler is not a hung enclave, so the connection is not
// retired on the timeout alone.
func (cc *clientConn) suspect() {
	if cc.spawn == nil || !cc.probing.CompareAndSwap(false, true) {
		return
	}
	if !cc.spawn(cc.probe) {
		cc.probing.Store(false)
	}
}

// probe sends enclavekit.health and retires the connection if nothing at
// all (not the answer, not any other frame) arrives within
// silentProbeTimeout. Any frame, even an error response, shows the enclave
// is reading and answering.
func (cc *clientConn) probe() {
	defer cc.probing.Store(false)
	start := time.Now().UnixNano()
	ctx, cancel := context.WithTimeout(context.Background(), silentProbeTimeout)
	defer cancel()
	if _, err := cc.call(ctx, protocol.MethodHealth, nil); err == nil || cc.lastFrame.Load() >= start || cc.broken() {
		return
	}
	cc.fail(fmt.Errorf("%w: the enclave sent nothing, not even an answer to a health probe within %v, after a call timed out", ErrConnLost, silentProbeTimeout))
}

// write encodes req (already validated) into the connection's reused
// buffer and sends it as one frame. A write cut short by ctx or the
// deadline may leave half a frame on the stream, so it breaks the
// connection. ch is the call's result channel: the connection's timer may
// end the call while it waits for its turn to write.
func (cc *clientConn) write(b *callBound, id uint64, ch chan result, req *protocol.Envelope) error {
	ctx := b.ctx
wait:
	for {
		select {
		case cc.wsem <- struct{}{}:
			break wait
		case <-cc.done:
			return errNotSent{cc.lostErr()}
		case <-ctx.Done():
			cc.forget(id)
			return fmt.Errorf("parent: waiting to send request: %w", ctx.Err())
		case r := <-ch:
			if r.err != errCallExpired {
				// An answer to a request not yet sent (only a misbehaving
				// enclave guesses ids): the call takes it once it is sent.
				ch <- r
				ch = nil
				continue
			}
			cc.forget(id)
			return fmt.Errorf("parent: waiting to send request: %w", context.DeadlineExceeded)
		}
	}
	// The semaphore may have been free at the same time as one of the other
	// cases was ready: nothing is written for a call that already ended,
	// nor on a connection that broke while this call waited (the writer
	// before it fails the connection before giving the semaphore back).
	if cc.broken() {
		<-cc.wsem
		return errNotSent{cc.lostErr()}
	}
	if err := b.err(); err != nil {
		<-cc.wsem
		cc.forget(id)
		return fmt.Errorf("parent: waiting to send request: %w", err)
	}
	var fired chan struct{}
	var stop func() bool
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			cc.nc.SetWriteDeadline(time.Unix(1, 0))
			close(fired)
		})
	}
	timed := !b.deadline.IsZero()
	if timed {
		// The call's deadline is the write deadline: no watcher needed.
		cc.nc.SetWriteDeadline(b.deadline)
	}
	// Encoded under wsem straight into the frame writer's reused buffer:
	// no allocation per request.
	err := cc.fw.WriteEnvelope(req)
	interrupted := false
	if stop != nil && !stop() {
		<-fired
		interrupted = true
	} else if timed {
		interrupted = err != nil && errors.Is(err, os.ErrDeadlineExceeded)
	}
	if interrupted || timed {
		// The frame went out whole, or the connection is failed below;
		// either way the deadline must go.
		cc.nc.SetWriteDeadline(time.Time{})
	}
	// On failure the connection is failed before the semaphore is given
	// back, so that the next writer sees it broken and knows its request
	// was not sent.
	defer func() { <-cc.wsem }()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, protocol.ErrFrameTooLarge):
		// Refused before anything was written: the stream is intact.
		cc.forget(id)
		return fmt.Errorf("parent: request: %w", err)
	case interrupted:
		cc.fail(fmt.Errorf("%w: %w", ErrConnLost, errWriteInterrupted))
		return fmt.Errorf("parent: sending request: %w", b.err())
	}
	cc.fail(fmt.Errorf("%w: writing: %w", ErrConnLost, err))
	return cc.lostErr()
}

// errNotSent marks a failure that happened before any byte of the request
// was written, so the call may be retried on another connection.
type errNotSent struct{ err error }

func (e errNotSent) Error() string { return e.err.Error() }
func (e errNotSent) Unwrap() error { return e.err }

// forget removes a request that was never sent (even if expire abandoned
// it meanwhile).
func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pending == nil {
		return
	}
	if p, ok := cc.pending[id]; ok && p.ch == nil {
		cc.abandoned--
	}
	delete(cc.pending, id)
}

// abandonLocked marks request id abandoned: the id stays known so that its
// late response is recognised and dropped. It reports whether too many requests are abandoned. cc.mu is
// held.
func (cc *clientConn) abandonLocked(id uint64) (tooMany bool) {
	if cc.pending == nil {
		return false
	}
	if p, ok := cc.pending[id]; ok && p.ch != nil {
		cc.pending[id] = pendingCall{}
		cc.abandoned++
	}
	return cc.abandoned > maxAbandoned
}

// background is the background reader: it holds the reader role until a
// caller asks for it (bgStop) or the connection breaks.
func (cc *clientConn) background() {
	for {
		cc.mu.Lock()
		if cc.pending == nil {
			cc.mu.Unlock()
			return
		}
		if cc.bgStop && !cc.bgMust {
			cc.bgStop, cc.bg = false, false
			cc.releaseLocked(0)
			cc.mu.Unlock()
			return
		}
		cc.bgPeek = true
		cc.nc.SetReadDeadline(time.Time{})
		cc.mu.Unlock()
		frame, big, err := cc.peekFrame()
		cc.mu.Lock()
		cc.bgPeek = false
		cc.nc.SetReadDeadline(time.Time{}) // a caller's interruption may have come late
		cc.mu.Unlock()
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err == nil && big {
			frame, err = cc.fr.ReadFrame()
		}
		if err != nil {
			cc.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
			return
		}
		if big {
			cc.mu.Lock()
			cc.bgMust = false
			cc.mu.Unlock()
		}
		if _, _, ok := cc.dispatch(frame, 0); !ok {
			return
		}
	}
}

// peekFrame reads the next frame if it fits the read buffer and returns
// its payload, valid until the next read; a read interrupted by a deadline
// (os.ErrDeadlineExceeded) consumes nothing, so the stream stays intact.
// A frame too large for the buffer is left unread (big); a declared
// length over the limit and a broken stream give FrameReader's errors.
func (cc *clientConn) peekFrame() (frame []byte, big bool, err error) {
	hdr, err := cc.br.Peek(protocol.HeaderSize)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, false, err
		}
		f, err := cc.fr.ReadFrame() // the same error, worded by the frame codec
		return f, false, err
	}
	n := uint64(binary.BigEndian.Uint32(hdr))
	if n > uint64(cc.fr.Max()) {
		f, err := cc.fr.ReadFrame() // reports the length; nothing more is read
		return f, false, err
	}
	size := protocol.HeaderSize + int(n)
	if size > cc.br.Size() {
		return nil, true, nil
	}
	p, err := cc.br.Peek(size)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, false, err
		}
		f, err := cc.fr.ReadFrame()
		return f, false, err
	}
	cc.br.Discard(size) // p stays valid until the next read
	return p[protocol.HeaderSize:], false, nil
}

// dispatch delivers the response in frame to its call; the one to request
// self (0: none) is returned instead (mine). ok is false if the connection
// broke.
func (cc *clientConn) dispatch(frame []byte, self uint64) (r result, mine, ok bool) {
	cc.lastFrame.Store(time.Now().UnixNano())
	env, err := protocol.UnmarshalEnvelope(frame)
	if err != nil {
		cc.fail(fmt.Errorf("%w: %w: %w", ErrConnLost, ErrProtocol, err))
		return r, false, false
	}
	if env.IsRequest() {
		cc.fail(fmt.Errorf("%w: %w: the enclave sent a request (%.40q) on a client connection", ErrConnLost, ErrProtocol, env.Method))
		return r, false, false
	}
	cc.mu.Lock()
	if cc.pending == nil {
		cc.mu.Unlock()
		return r, false, false
	}
	p, found := cc.pending[env.ID]
	ch := p.ch
	if found {
		delete(cc.pending, env.ID)
		if ch == nil {
			cc.abandoned--
		}
	}
	cc.mu.Unlock()
	if !found {
		cc.fail(fmt.Errorf("%w: %w: response to request id %d, which is not in flight", ErrConnLost, ErrProtocol, env.ID))
		return r, false, false
	}
	if ch == nil {
		return r, false, true // its caller gave up
	}
	if env.Code != protocol.CodeOK {
		// The message is the enclave's text: keep it short and printable.
		r = result{err: &protocol.RemoteError{Code: env.Code, Message: Sanitize(env.Message, maxRemoteMessage)}}
	} else {
		r = result{body: env.Body} // the decoder copied Body out of the frame buffer
	}
	if env.ID == self {
		return r, true, true
	}
	ch <- r
	return r, false, true
}
