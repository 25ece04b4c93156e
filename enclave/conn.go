package enclave

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// retainFrameBuf is the largest frame buffer a connection keeps between
// frames; a larger one is released after its frame is decoded.
const retainFrameBuf = 64 << 10

// stuckWrite is how long a response write may be in progress before the
// connection's reader stops reading until it completes.
const stuckWrite = 5 * time.Millisecond

// readBufSize is the per-connection read buffer. Small frames that arrive
// together (pipelined requests) are read with one system call.
const readBufSize = 4 << 10

// conn is one client connection. Its requests are read in turn by its
// goroutines: the one holding the read turn reads a request, passes the
// turn on (to the spare goroutine, or to a new one) so that reading goes
// on, and serves the request itself, writing its response; so a request is
// handled by the goroutine that read it, with no hand-off, and up to
// MaxInFlight are handled at once. A lone request keeps the turn while it
// is handled, and the kernel passes it on if bytes arrive meanwhile (see
// serveRequest). The connection's first goroutine (serve) stays to the
// end; one more may wait as a spare for the turn.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	ctx    context.Context // canceled by abort
	cancel context.CancelCauseFunc

	rmu      sync.Mutex // guards draining and the read deadline
	draining bool

	// wmu serializes response frames: a one-slot channel rather than a
	// sync.Mutex, so that handlers queued behind a write to a peer that
	// does not read are durably blocked (testing/synctest can then advance
	// time past WriteTimeout).
	wmu chan struct{}
	// writeStart is when the response write in progress began (unix
	// nanos), 0 when none is: a write in progress for longer than
	// stuckWrite means the peer is not reading its responses.
	writeStart atomic.Int64
	fw         *protocol.FrameWriter
	werr       error

	budget   budgetOwner   // this connection's account in Server.budget
	sem      chan struct{} // in-flight request slots
	handlers sync.WaitGroup
	reqs     reqDeadlines // the handlers' contexts that watch their deadline
	watch    watched      // see serveRequest

	// The read turn. Only its holder uses br and fr. turn carries it to a
	// spare; readEnd is closed by the holder that ends the read loop.
	br        *bufio.Reader
	fr        *protocol.FrameReader
	turn      chan struct{}
	readEnd   chan struct{}
	tmu       sync.Mutex
	spares    int            // goroutines waiting for the turn; guarded by tmu
	workers   sync.WaitGroup // goroutines started by passTurn
	closeOnce sync.Once

	// For eviction at MaxConns (Server.evictOne): since is when the
	// connection last made progress (accepted, a frame completed, a
	// response written) or, while a frame is being received, when that
	// frame began: it has been idle or stalled since then.
	since   atomic.Int64
	frames  atomic.Uint64 // request frames received: breaks ties of since
	evicted bool          // guarded by Server.mu
}

// Eviction tiers, evicted lowest first.
const (
	tierUnproven = iota // no whole request yet: silent, or stalled in its first frame or PROXY header
	tierWaiting         // idle between requests, or stalled inside a later frame
	tierBusy            // a request in flight
)

// errEvicted is the cause of an evicted connection's cancellation.
var errEvicted = errors.New("enclave: connection evicted at MaxConns to make room for a new one")

// evictionRank orders connections for eviction: lower tier first, then
// older since, then fewer request frames received.
func (c *conn) evictionRank() (tier int, since int64, frames uint64) {
	since, frames = c.since.Load(), c.frames.Load()
	switch {
	case len(c.sem) > 0:
		return tierBusy, since, frames
	case frames == 0:
		return tierUnproven, since, frames
	}
	return tierWaiting, since, frames
}

// evict closes the connection for a newcomer; its handlers are canceled.
func (c *conn) evict() {
	c.closeOnce.Do(func() {
		c.cancel(errEvicted)
		c.nc.Close()
	})
}

func (c *conn) progress() { c.since.Store(time.Now().UnixNano()) }

func newConn(s *Server, parent context.Context, nc net.Conn) *conn {
	ctx, cancel := context.WithCancelCause(parent)
	c := &conn{
		s:      s,
		nc:     nc,
		remote: "?", // set by serve: RemoteAddr may read a PROXY header
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, s.cfg.MaxInFlight),
		wmu:    make(chan struct{}, 1),

		turn:    make(chan struct{}, 1),
		readEnd: make(chan struct{}),
	}
	c.progress()
	// MaxFrameSize was validated by Config.Validate.
	c.fw, _ = protocol.NewFrameWriter(retryConn{nc}, s.cfg.MaxFrameSize)
	return c
}

func remoteString(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return "?"
}

// closeReason says why a connection's read loop ended.
type closeReason struct {
	msg     string
	err     error
	hostile bool // the peer misbehaved: abort at once instead of finishing in-flight requests
	level   slog.Level
}

// serve runs the connection until its read loop ends, then lets in-flight
// handlers finish (unless the peer misbehaved) and closes the connection.
// No goroutine of this connection outlives serve.
func (c *conn) serve() {
	defer c.s.removeConn(c)
	// Deferred, so that it runs even if a handler served on this goroutine
	// calls runtime.Goexit.
	defer c.finish()
	// On a NewProxyV2Listener connection this reads the PROXY header
	// (bounded by its header timeout, and by abort), here on the
	// connection's goroutine and never in the accept loop.
	c.remote = remoteString(c.nc)
	c.br = bufio.NewReaderSize(retryConn{c.nc}, readBufSize)
	c.fr, _ = protocol.NewFrameReader(c.br, c.s.cfg.MaxFrameSize)
	c.work(true)
}

// finish waits for the end of the read loop and of every handler and
// goroutine of the connection, then closes it.
func (c *conn) finish() {
	<-c.readEnd
	c.handlers.Wait()
	c.workers.Wait()
	c.reqs.close()
	if c.watch.rc != nil {
		c.s.watch.unregister(c)
	}
	c.abort()
}

// work serves requests while it holds the read turn: it reads the next
// request, passes the turn on and handles the request. Then it waits for
// the turn again if no other goroutine does (always, with stay: serve's
// goroutine waits for the end of the connection anyway), else it returns.
func (c *conn) work(stay bool) {
	for {
		req, size, r, ok := c.readRequest()
		if !ok {
			c.endRead(r)
			return
		}
		if c.serveRequest(req, size) {
			continue
		}
		if !c.awaitTurn(stay) {
			return
		}
	}
}

// passTurn gives the read turn to the spare goroutine, or to a new one.
func (c *conn) passTurn() {
	c.s.handoffs.Add(1)
	c.tmu.Lock()
	if c.spares > 0 {
		c.spares--
		c.tmu.Unlock()
		c.turn <- struct{}{} // never blocks: there is one turn
		return
	}
	c.tmu.Unlock()
	c.workers.Add(1)
	go c.worker()
}

func (c *conn) worker() {
	defer c.workers.Done()
	c.work(false)
}

// awaitTurn waits as a spare until the read turn comes (true) or the read
// loop has ended (false). Without stay it returns false at once if another
// goroutine is the spare already.
func (c *conn) awaitTurn(stay bool) bool {
	c.tmu.Lock()
	if c.spares > 0 && !stay {
		c.tmu.Unlock()
		return false
	}
	c.spares++
	c.tmu.Unlock()
	select {
	case <-c.turn:
		return true
	case <-c.readEnd:
		// The turn is never in flight once the read loop has ended.
		return false
	}
}

// endRead ends the read loop for r: a misbehaving peer is cut off at once
// (in-flight handlers canceled), any other ending lets them finish.
func (c *conn) endRead(r closeReason) {
	if r.hostile {
		c.s.dropped.Add(1)
		c.abort()
	}
	c.s.peerLog(r.level, "enclave server: closing connection: "+r.msg, "remote", c.remote, "err", r.err)
	close(c.readEnd)
}

// abort cancels the connection's handlers and closes it; blocked reads and
// writes return at once. It is safe to call more than once.
func (c *conn) abort() {
	c.closeOnce.Do(func() {
		c.cancel(nil)
		c.nc.Close()
	})
}

// drain stops the read loop at its next read: no new request is read, and
// in-flight requests finish.
func (c *conn) drain() {
	c.rmu.Lock()
	c.draining = true
	_ = c.nc.SetReadDeadline(time.Now().Add(-time.Second))
	c.rmu.Unlock()
}

// setReadDeadline sets the read deadline unless the connection is draining,
// which it reports with false.
func (c *conn) setReadDeadline(d time.Duration) bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.draining {
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	return true
}

func (c *conn) isDraining() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.draining
}

// readRequest reads frames, as the holder of the read turn, until one is a
// request admitted to run (ok, with its in-flight slot and bytes taken:
// handle releases them) or the read loop ends (not ok, and why). A frame
// that is not a request is answered here.
func (c *conn) readRequest() (req protocol.Envelope, size int64, r closeReason, ok bool) {
	cfg := &c.s.cfg
	br := c.br
	for {
		// A peer that does not take its responses gets nothing more read
		// until it does (or WriteTimeout disconnects it): pipelining
		// without reading cannot pile up requests and responses.
		if ws := c.writeStart.Load(); ws != 0 && time.Since(time.Unix(0, ws)) > stuckWrite {
			select {
			case c.wmu <- struct{}{}:
				<-c.wmu
			case <-c.ctx.Done():
				return req, 0, closeReason{msg: "connection aborted", err: context.Cause(c.ctx), level: slog.LevelDebug}, false
			}
		}
		// Wait for the first byte of the next frame: the idle timeout.
		if br.Buffered() == 0 {
			if !c.setReadDeadline(cfg.IdleTimeout) {
				return req, 0, closeReason{msg: "server is shutting down", level: slog.LevelDebug}, false
			}
			if _, err := br.Peek(1); err != nil {
				return req, 0, c.readFailed(err, "idle timeout: no request within IdleTimeout", false), false
			}
		}
		// A frame has begun: from now on the connection is stalled, not
		// idle, until the frame is whole.
		c.progress()
		// The whole frame must arrive within ReadFrameTimeout.
		if !c.setReadDeadline(cfg.ReadFrameTimeout) {
			return req, 0, closeReason{msg: "server is shutting down", level: slog.LevelDebug}, false
		}
		payload, err := c.fr.ReadFrame()
		if err != nil {
			return req, 0, c.readFailed(err, "frame not received within ReadFrameTimeout (slow or stalled peer)", true), false
		}
		c.frames.Add(1)
		c.progress()
		size := int64(len(payload))
		env, err := protocol.UnmarshalEnvelope(payload)
		if cap(payload) > retainFrameBuf {
			// Do not keep a large buffer for the life of an idle
			// connection: the decoded envelope holds its own copy.
			c.fr, _ = protocol.NewFrameReader(br, cfg.MaxFrameSize)
		}
		if err == nil && !env.IsRequest() {
			err = fmt.Errorf("%w: the envelope has no method (key 2): the server accepts only requests", protocol.ErrBadEnvelope)
		}
		if err != nil {
			id, ok := protocol.RecoverID(payload)
			if !ok {
				return req, 0, closeReason{msg: "undecodable envelope without a recoverable request id", err: err, hostile: true, level: slog.LevelWarn}, false
			}
			c.s.failures.Add(1)
			c.s.peerLog(slog.LevelWarn, "enclave server: bad request envelope", "remote", c.remote, "id", id, "err", err)
			c.writeResponse(&protocol.Envelope{ID: id, Code: protocol.CodeBadRequest, Message: protocol.CodeBadRequest.Message()})
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-c.ctx.Done():
			return req, 0, closeReason{msg: "connection aborted", err: context.Cause(c.ctx), level: slog.LevelDebug}, false
		}
		// The server-wide memory bound: stop reading this connection until
		// the request fits in MaxInFlightBytes.
		if err := c.s.budget.acquireFor(c.ctx, &c.budget, size); err != nil {
			<-c.sem
			return req, 0, closeReason{msg: "connection aborted", err: err, level: slog.LevelDebug}, false
		}
		c.handlers.Add(1)
		return env, size, closeReason{}, true
	}
}

// readFailed classifies a read error. timeoutMsg describes a deadline
// expiry; hostileTimeout says whether such an expiry is the peer's fault.
func (c *conn) readFailed(err error, timeoutMsg string, hostileTimeout bool) closeReason {
	switch {
	case errors.Is(context.Cause(c.ctx), errEvicted):
		return closeReason{msg: "evicted at MaxConns to make room for a new connection (it was idle or stalled the longest)", level: slog.LevelInfo}
	case c.ctx.Err() != nil:
		return closeReason{msg: "connection aborted", err: err, level: slog.LevelDebug}
	case errors.Is(err, os.ErrDeadlineExceeded) && c.isDraining():
		return closeReason{msg: "server is shutting down", level: slog.LevelDebug}
	case errors.Is(err, os.ErrDeadlineExceeded):
		lvl := slog.LevelInfo
		if hostileTimeout {
			lvl = slog.LevelWarn
		}
		return closeReason{msg: timeoutMsg, err: err, hostile: hostileTimeout, level: lvl}
	case err == io.EOF:
		return closeReason{msg: "peer closed the connection", level: slog.LevelDebug}
	case errors.Is(err, ErrNoProgress):
		return closeReason{msg: "peer made no progress (repeated zero-length or interrupted reads)", err: err, hostile: true, level: slog.LevelWarn}
	case errors.Is(err, protocol.ErrFrameLengthInvalid), errors.Is(err, protocol.ErrFrameTooLarge):
		return closeReason{msg: fmt.Sprintf("frame length refused (MaxFrameSize is %d bytes)", c.s.cfg.MaxFrameSize), err: err, hostile: true, level: slog.LevelWarn}
	case errors.Is(err, protocol.ErrFrameTruncated):
		return closeReason{msg: "peer closed the connection inside a frame", err: err, hostile: true, level: slog.LevelInfo}
	}
	return closeReason{msg: "read failed", err: err, hostile: true, level: slog.LevelInfo}
}

// handle runs one request and writes its response, then releases the
// request's in-flight slot and its charged bytes. beforeWrite, if set, runs
// once the handler has returned, before the response is written.
func (c *conn) handle(req protocol.Envelope, charged int64, beforeWrite func()) {
	defer c.handlers.Done()
	defer func() { <-c.sem }()
	defer c.s.budget.releaseFor(&c.budget, charged)
	c.s.requests.Add(1)
	start := time.Now()
	body, err := c.call(&req, start)
	resp := protocol.Envelope{Version: protocol.Version, ID: req.ID}
	if err != nil {
		code := protocol.CodeOf(err)
		resp.Code, resp.Message = code, code.Message()
		c.s.failures.Add(1)
		c.s.peerLog(slog.LevelWarn, "enclave server: request failed", "remote", c.remote, "method", req.Method, "id", req.ID, "code", int(code), "err", err)
	} else {
		resp.Body = body
		// The access log is at debug level: it names methods and sizes,
		// never bodies. Its arguments are only built when it is enabled,
		// so a disabled access log costs no allocation per request.
		if c.s.log.Enabled(c.ctx, slog.LevelDebug) {
			c.s.log.Debug("enclave server: request served", "remote", c.remote, "method", req.Method, "id", req.ID,
				"request_bytes", len(req.Body), "response_bytes", len(body), "duration", time.Since(start))
		}
	}
	if beforeWrite != nil {
		beforeWrite()
	}
	c.writeResponse(&resp)
}

// call runs the handler for req, recovering a panic as an internal error.
// The handler's context ends HandlerTimeout after start.
func (c *conn) call(req *protocol.Envelope, start time.Time) (body []byte, err error) {
	h, ok := (*c.s.handlers.Load())[req.Method]
	if !ok {
		return nil, fmt.Errorf("%w: no handler for method %q", protocol.ErrUnknownMethod, req.Method)
	}
	ctx := newReqCtx(c, start)
	defer ctx.finish()
	defer func() {
		if r := recover(); r != nil {
			c.s.panics.Add(1)
			c.s.log.Error("enclave server: handler panicked", "method", req.Method, "id", req.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			body, err = nil, fmt.Errorf("%w: handler for %q panicked: %v", protocol.ErrInternal, req.Method, r)
		}
	}()
	body, err = h(ctx, req.Body)
	if err != nil {
		return nil, err
	}
	return body, nil
}

// writeResponse writes one response frame under WriteTimeout. A response
// too large for MaxFrameSize is replaced by a "too large" error. A write
// failure aborts the connection.
func (c *conn) writeResponse(resp *protocol.Envelope) {
	var n int
	var err error
	// A body that cannot fit is refused before it is copied into a frame:
	// encoding a handler's oversized result would allocate its size again.
	// The size is known without encoding: the response is encoded only
	// once, straight into the frame writer's reused buffer.
	if len(resp.Body) <= c.s.cfg.MaxFrameSize {
		n, err = protocol.EnvelopeSize(resp)
	}
	if err == nil && (n == 0 || n > c.s.cfg.MaxFrameSize) {
		c.s.failures.Add(1)
		c.s.log.Warn("enclave server: response exceeds MaxFrameSize; sending a too-large error instead", "remote", c.remote, "id", resp.ID, "body_size", len(resp.Body), "max_frame_size", c.s.cfg.MaxFrameSize)
		resp = &protocol.Envelope{ID: resp.ID, Code: protocol.CodeTooLarge, Message: protocol.CodeTooLarge.Message()}
		n, err = protocol.EnvelopeSize(resp)
	}
	if err != nil {
		c.s.log.Error("enclave server: encoding response", "id", resp.ID, "err", err)
		resp = &protocol.Envelope{ID: resp.ID, Code: protocol.CodeInternal, Message: protocol.CodeInternal.Message()}
		n, _ = protocol.EnvelopeSize(resp)
	}
	// The response counts against MaxInFlightBytes until it is written.
	c.s.budget.chargeFor(&c.budget, int64(n))
	defer c.s.budget.releaseFor(&c.budget, int64(n))
	c.wmu <- struct{}{}
	defer func() { <-c.wmu }()
	if c.werr != nil {
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	c.writeStart.Store(time.Now().UnixNano())
	err = c.fw.WriteEnvelope(resp)
	c.writeStart.Store(0)
	if err == nil {
		c.progress()
	}
	if err != nil {
		c.werr = err
		lvl := slog.LevelDebug // the connection was already being closed
		if c.ctx.Err() == nil {
			lvl = slog.LevelWarn
			c.s.dropped.Add(1)
		}
		c.s.peerLog(lvl, "enclave server: writing response failed (peer not reading within WriteTimeout, or gone); closing connection",
			"remote", c.remote, "id", resp.ID, "err", err)
		c.abort()
	}
}
