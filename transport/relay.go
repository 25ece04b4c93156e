package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffers of Relay. A copy through user space (where the kernel cannot
// splice) reads into a pooled buffer of relayBufSize, and into one of
// relayBigBufSize while its source keeps filling whole buffers (a bulk
// stream): fewer, larger reads and writes mean fewer wakeups and
// syscalls per byte, which is what a relay on a small instance is short
// of (a 64 KiB buffer moved about half the bytes per second of a 1 MiB one
// in parent/proxy's BenchmarkThroughput). At most relayMaxBigBufs big
// buffers (64 MiB) are in use at once; a copy that finds none free stays
// small. Where the connection allows it (TCP, Unix and vsock on Linux), a
// buffer is taken only once bytes are there to read and given back after
// they are written, so a connection waiting for bytes holds none.
const (
	relayBufSize    = 64 << 10
	relayBigBufSize = 1 << 20
	relayMaxBigBufs = 64
	// relaySpliceMax bounds one splice, so that the byte counters and the
	// activity clock move at least this often on a spliced stream.
	relaySpliceMax = 1 << 20
	// relayFlushBytes is how many bytes a direction moves between two
	// calls of its byte counter.
	relayFlushBytes = 1 << 20
)

var (
	relayBufs    = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}
	relayBigBufs = sync.Pool{New: func() any { b := make([]byte, relayBigBufSize); return &b }}
	// relayBigTokens holds one token per big buffer in use.
	relayBigTokens = make(chan struct{}, relayMaxBigBufs)
	// relayBufsHeld counts the buffers taken and not given back (tests).
	relayBufsHeld atomic.Int64
)

// ErrIdle is returned by Relay.Run when it gave up because no byte moved
// in either direction for Relay.Idle, or a write was blocked that long.
var ErrIdle = errors.New("transport: relay: no byte moved for the idle timeout")

// ErrReadDeadline is returned by Relay.Run when the deadline given by
// Relay.ReadDeadline passed with no byte from the first connection.
var ErrReadDeadline = errors.New("transport: relay: the first connection sent nothing before its read deadline")

// Relay copies bytes between two connections, A and B, in both directions
// at once: the relay of the egress proxy and of the ingress. Set the
// fields, then call Run once; Activity may be called from any goroutine
// meanwhile.
//
// When one side's reads end (EOF), the other side is half-closed
// (CloseWrite) if it supports it and the copy the other way goes on;
// without CloseWrite the end of one direction ends both. On Linux, bytes
// from a TCP or Unix connection to a TCP one are spliced by the kernel
// (no copy through user space) while they flow. Whatever the path, a
// direction waiting for bytes from a *net.TCPConn, *net.UnixConn or vsock
// connection holds no buffer and no splice pipe (only its socket): it
// waits for readability first, then takes a buffer or a pipe to move what
// is there. Other connections (TLS, net.Pipe, wrappers) are read through a
// pooled buffer that is held while they wait.
type Relay struct {
	// Idle > 0 makes Run give up when no byte moved in either direction
	// for this long, or a write was blocked this long (a peer that stops
	// reading cannot hold the relay). 0 means no limit.
	Idle time.Duration
	// Prefix, if not empty, is written to B before anything else (a PROXY
	// protocol header, say). It is not counted in Run's results.
	Prefix []byte
	// CountAToB and CountBToA, if set, are called with the bytes written
	// each way since their last call: at least every MiB, before the
	// direction waits for more bytes (after a read that did not fill its
	// buffer, or a splice of all that was queued), and when it ends. So
	// live metrics lag a stream by at most a MiB, and a connection that
	// went quiet not at all.
	CountAToB, CountBToA func(n int64)
	// Observe, if set, is called with every chunk read from A, in order,
	// before it is written to B, and the time it was read (the ingress
	// follows message boundaries with it). It must not keep p. A to B
	// then always copies through a buffer.
	Observe func(p []byte, now time.Time)
	// ReadDeadline, if set, is called before each wait for bytes from A;
	// a non-zero time it returns is a deadline for them, next to Idle
	// (the ingress's minimum sending rate). When it passes with nothing
	// read, Run gives up with ErrReadDeadline. Observe and ReadDeadline
	// are called from one goroutine, the one reading A.
	ReadDeadline func() time.Time

	running atomic.Bool
	started atomic.Bool // start is set
	start   time.Time
	// Activity clocks, as nanoseconds since start plus one (0: never).
	last           atomic.Int64 // the last byte read or written either way
	lastAB, lastBA atomic.Int64 // the last bytes read from A, from B

	a, b    net.Conn
	mu      sync.Mutex
	cause   error // why the relay was aborted; guarded by mu
	aborted atomic.Bool
}

// Activity reports when bytes last moved: last either way (read or
// written), aToB when bytes were last read from A, bToA from B. A zero
// time means never (or Run has not started).
func (r *Relay) Activity() (last, aToB, bToA time.Time) {
	if !r.started.Load() {
		return
	}
	at := func(v int64) time.Time {
		if v == 0 {
			return time.Time{}
		}
		return r.start.Add(time.Duration(v - 1))
	}
	return at(r.last.Load()), at(r.lastAB.Load()), at(r.lastBA.Load())
}

// Run copies A to B and B to A until both directions ended, and returns
// the bytes written each way. It does not close a or b: when it gives up
// (Idle, ReadDeadline, an error, ctx ended) it unblocks both copies by
// setting past deadlines on a and b, so the caller's Close does the rest.
// It returns nil when both directions reached EOF, or a connection was
// closed by the caller (net.ErrClosed) while it ran; ErrIdle,
// ErrReadDeadline, ctx's error, or the first read or write error that
// ended it otherwise. Run panics when called twice.
func (r *Relay) Run(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	if !r.running.CompareAndSwap(false, true) {
		panic("transport: Relay.Run called twice")
	}
	r.a, r.b = a, b
	r.start = time.Now()
	r.started.Store(true)
	r.touch(time.Now())
	stop := context.AfterFunc(ctx, func() { r.abort(ctx.Err()) })
	defer stop()

	if len(r.Prefix) > 0 {
		if r.Idle > 0 {
			b.SetWriteDeadline(time.Now().Add(r.Idle))
		}
		if r.aborted.Load() {
			return 0, 0, r.result()
		}
		if _, err := b.Write(r.Prefix); err != nil {
			r.abort(writeErr(err))
			return 0, 0, r.result()
		}
		r.touch(time.Now())
	}

	ab := r.newHalf(a, b, &r.lastAB, r.CountAToB)
	ab.observe, ab.deadline = r.Observe, r.ReadDeadline
	ba := r.newHalf(b, a, &r.lastBA, r.CountBToA)
	ab.setup()
	ba.setup()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ba.run()
	}()
	ab.run()
	<-done
	return ab.n, ba.n, r.result()
}

// touch records activity at now.
func (r *Relay) touch(now time.Time) { r.last.Store(int64(now.Sub(r.start)) + 1) }

// lastActive is when bytes last moved either way (or Run started).
func (r *Relay) lastActive() time.Time { return r.start.Add(time.Duration(r.last.Load() - 1)) }

// abort ends the relay for cause (nil: a normal end, such as an EOF that
// cannot be passed on as a half close): it makes every blocked read and
// write of both directions return.
func (r *Relay) abort(cause error) {
	r.mu.Lock()
	if r.aborted.Load() {
		r.mu.Unlock()
		return
	}
	r.cause = cause
	// The flag first, then the past deadlines: a direction sets its own
	// deadline before it checks the flag, so either it sees the flag or
	// the past deadline overrides its own.
	r.aborted.Store(true)
	r.mu.Unlock()
	past := time.Unix(1, 0)
	r.a.SetDeadline(past)
	r.b.SetDeadline(past)
}

func (r *Relay) result() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if isClosed(r.cause) {
		return nil // the caller closed a connection (a drain, an eviction)
	}
	return r.cause
}

func isClosed(err error) bool {
	return err != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed))
}

// isTimeout reports whether err is a deadline passing (net.Conn's errors
// then wrap os.ErrDeadlineExceeded). Not any net.Error that says Timeout:
// ETIMEDOUT, a connection whose peer vanished, says so too.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// writeErr is the cause a failed write ends the relay with: a write
// blocked until its deadline means the peer stopped reading.
func writeErr(err error) error {
	if isTimeout(err) {
		return ErrIdle
	}
	return err
}

// half is one direction of a Relay: src to dst.
type half struct {
	r        *Relay
	src, dst net.Conn
	lastRead *atomic.Int64
	count    func(int64)
	observe  func([]byte, time.Time)
	deadline func() time.Time

	n, pending int64 // bytes written; of them, not yet counted

	// resumable: dst is a descriptor's connection (syscall.Conn), whose
	// Write that timed out wrote exactly what it says and can be called
	// again. Not so TLS, whose timed-out Write may leave half a record
	// and fails every later one.
	resumable bool

	armed  bool      // src's read deadline is set
	idleDL time.Time // Idle's part of it (zero: none)
	rdl    time.Time // the read deadline set on src

	buf     *[]byte // the pooled buffer held, or nil
	big     bool    // buf is a big one (holds a token)
	bulk    bool    // the last read filled a small buffer: take a big one
	drained bool    // the last read or splice took all src had queued

	fast fastPath // where the platform waits without a buffer and splices
}

func (r *Relay) newHalf(src, dst net.Conn, lastRead *atomic.Int64, count func(int64)) *half {
	_, resumable := dst.(syscall.Conn)
	return &half{r: r, src: src, dst: dst, lastRead: lastRead, count: count, resumable: resumable}
}

// run copies until src ends or the relay is aborted.
func (h *half) run() {
	defer h.flush()
	for {
		if h.drained && h.pending > 0 {
			h.flush() // about to wait: count what moved before
		}
		h.armRead()
		if h.r.aborted.Load() {
			return
		}
		n, avail, err := h.read()
		if avail > 0 {
			if !h.splice(avail) {
				return
			}
			continue
		}
		if n > 0 {
			ok := h.write(n)
			h.putBuf()
			if !ok {
				return
			}
		} else {
			h.putBuf()
		}
		if err != nil && !h.readFailed(err) {
			return
		}
	}
}

// read waits for bytes from src and reads them into a pooled buffer (n
// of them, in *h.buf), or reports avail > 0 bytes that can be spliced.
func (h *half) read() (n, avail int, err error) {
	if h.fast.ok() {
		return h.fast.read(h)
	}
	h.getBuf()
	n, err = h.src.Read(*h.buf)
	if n > 0 {
		h.gotBytes(n)
	}
	return n, 0, err
}

// gotBytes accounts for n bytes just read into h.buf.
func (h *half) gotBytes(n int) {
	now := time.Now()
	h.r.touch(now)
	h.lastRead.Store(int64(now.Sub(h.r.start)) + 1)
	if h.observe != nil {
		h.observe((*h.buf)[:n], now)
	}
	h.drained = n < len(*h.buf)
	switch {
	case !h.big && n == len(*h.buf):
		h.bulk = true
	case h.big && n < relayBufSize:
		h.bulk = false
	}
}

// write writes h.buf[:n] to dst; false means the relay is over. With
// Idle, it gives up when no byte went out for Idle. Where dst's writes can
// be resumed, a peer that reads slowly but keeps reading is not idle,
// however long the whole buffer takes: each Write is bounded by a quarter
// of Idle, so that the bytes it moved reach the activity clock (which the
// other direction's idle check reads) while the rest waits. Elsewhere the
// whole buffer must go within Idle.
func (h *half) write(n int) bool {
	p := (*h.buf)[:n]
	moved := time.Now() // when bytes last went out (or the write began)
	for {
		if idle := h.r.Idle; idle > 0 {
			dl := moved.Add(idle)
			if quarter := time.Now().Add(idle / 4); h.resumable && quarter.Before(dl) {
				dl = quarter
			}
			h.dst.SetWriteDeadline(dl)
		}
		if h.r.aborted.Load() {
			return false
		}
		nw, err := h.dst.Write(p)
		h.wrote(int64(nw))
		p = p[nw:]
		if err == nil {
			return true
		}
		if h.resumable && h.r.Idle > 0 && isTimeout(err) && !h.r.aborted.Load() {
			now := time.Now()
			if nw > 0 {
				moved = now
			}
			if now.Sub(moved) < h.r.Idle {
				continue
			}
		}
		h.r.abort(writeErr(err))
		return false
	}
}

// wrote accounts for n bytes written to dst.
func (h *half) wrote(n int64) {
	if n <= 0 {
		return
	}
	h.r.touch(time.Now())
	h.n += n
	h.pending += n
	if h.pending >= relayFlushBytes {
		h.flush()
	}
}

func (h *half) flush() {
	if h.pending > 0 && h.count != nil {
		h.count(h.pending)
	}
	h.pending = 0
}

// armRead sets src's read deadline: Idle after the last activity (set
// again only once it fired, since activity only moves it later) or the
// ReadDeadline hook's, whichever comes first.
func (h *half) armRead() {
	idle := h.r.Idle
	if h.deadline == nil && (idle <= 0 || h.armed) {
		return
	}
	if idle > 0 && !h.armed {
		h.idleDL = h.r.lastActive().Add(idle)
	}
	d := h.idleDL
	if h.deadline != nil {
		if rd := h.deadline(); !rd.IsZero() && (d.IsZero() || rd.Before(d)) {
			d = rd
		}
	}
	if !h.armed || !d.Equal(h.rdl) {
		h.src.SetReadDeadline(d)
		h.rdl, h.armed = d, true
	}
}

// readFailed handles a read error (or EOF) from src; false means this
// direction is over.
func (h *half) readFailed(err error) bool {
	if err == io.EOF {
		if cw, ok := h.dst.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err != nil && !isClosed(err) {
				h.r.abort(err)
			}
		} else {
			h.r.abort(nil) // without a half close, the end of one direction ends both
		}
		return false
	}
	if h.r.aborted.Load() {
		return false
	}
	if isTimeout(err) && (h.r.Idle > 0 || h.deadline != nil) {
		now := time.Now()
		if h.deadline != nil {
			if rd := h.deadline(); !rd.IsZero() && !now.Before(rd) {
				h.r.abort(ErrReadDeadline)
				return false
			}
		}
		if h.r.Idle > 0 && now.Sub(h.r.lastActive()) >= h.r.Idle {
			h.r.abort(ErrIdle)
			return false
		}
		h.armed = false // the other direction moved bytes: wait on
		return true
	}
	h.r.abort(err)
	return false
}

// getBuf takes a pooled buffer: a big one while the stream is bulk and
// one is free.
func (h *half) getBuf() {
	if h.buf != nil {
		return
	}
	if h.bulk {
		select {
		case relayBigTokens <- struct{}{}:
			h.buf, h.big = relayBigBufs.Get().(*[]byte), true
			relayBufsHeld.Add(1)
			return
		default: // every big buffer is in use: stay small
		}
	}
	h.buf, h.big = relayBufs.Get().(*[]byte), false
	relayBufsHeld.Add(1)
}

// putBuf gives the buffer back.
func (h *half) putBuf() {
	switch {
	case h.buf == nil:
		return
	case h.big:
		relayBigBufs.Put(h.buf)
		<-relayBigTokens
	default:
		relayBufs.Put(h.buf)
	}
	relayBufsHeld.Add(-1)
	h.buf, h.big = nil, false
}

// splice moves avail bytes (known to be queued on src) to dst in the
// kernel; false means the relay is over.
func (h *half) splice(avail int) bool {
	var wdl time.Time
	if h.r.Idle > 0 {
		wdl = time.Now().Add(h.r.Idle)
		h.dst.SetWriteDeadline(wdl)
	}
	if h.r.aborted.Load() {
		return false
	}
	n, err := h.fast.splice(h, min(avail, relaySpliceMax))
	h.drained = avail <= relaySpliceMax && n == int64(avail)
	if n > 0 {
		now := time.Now()
		h.lastRead.Store(int64(now.Sub(h.r.start)) + 1)
		h.wrote(n)
	}
	switch {
	case err == nil && n == 0:
		h.fast.noSplice() // the kernel moved nothing: copy from now on
		return true
	case err == nil:
		return true
	case h.r.aborted.Load():
		return false
	case isTimeout(err) && !wdl.IsZero() && !time.Now().Before(wdl):
		// dst took nothing for Idle. Bytes may be lost in the pipe, but
		// the relay is over anyway.
		h.r.abort(ErrIdle)
		return false
	}
	return h.readFailed(err)
}
