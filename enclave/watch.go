package enclave

import (
	"sync/atomic"
	"syscall"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// A lone request (nothing else of its connection in flight or already
// read) is handled by the goroutine that read it without passing the read
// turn first: readying another goroutine just to wait for bytes that
// usually do not come costs more than a small handler (a one-caller round
// trip spends about a third of its time on that wake). So that a request
// arriving meanwhile is still read at once, the kernel watches the socket
// while the handler runs (readWatch, an epoll instance on Linux): when
// bytes arrive, the watch passes the turn on, as the reader would have.
// The cost is two epoll_ctl calls per lone request instead of a goroutine
// wake. Connections that are not bare sockets (a PROXY protocol or TLS
// wrapper may hold bytes the kernel no longer sees) and systems without a
// watch pass the turn at once, as before.

// Watch states of a connection (conn.watch.state holds the state in its
// low bits and, above them, the number of the arming it belongs to, so that
// a handler whose turn the watch passed on cannot take back a later arming
// by the new turn holder).
const (
	watchOff    = iota // the turn holder is reading, or handling after passing the turn
	watchInline        // the turn holder handles a lone request; the watch is armed
	watchPassed        // the watch saw bytes arrive and passed the turn on

	watchStateBits = 2
)

func watchWord(gen uint64, state uint64) uint64 { return gen<<watchStateBits | state }

// watched is a connection's registration with the server's readWatch.
type watched struct {
	state atomic.Uint64
	// Used only by the turn holder, and by readWatch.unregister once the
	// connection's goroutines have ended.
	rc    syscall.RawConn // nil: not registered (yet, or cannot be)
	id    int32
	gen   uint64
	tried bool // registration was attempted: rc says whether it worked
	watchSys
}

// serveRequest handles req, which the caller read holding the read turn,
// and reports whether the caller still holds the turn afterwards.
func (c *conn) serveRequest(req protocol.Envelope, size int64) (kept bool) {
	gen, ok := c.armLone()
	if !ok {
		c.passTurn()
		c.handle(req, size, nil)
		return false
	}
	inline, off := watchWord(gen, watchInline), watchWord(gen, watchOff)
	handled := false
	defer func() {
		// A handler that ended its goroutine (runtime.Goexit) must not
		// take the turn with it.
		if !handled && c.watch.state.CompareAndSwap(inline, off) {
			c.s.watch.disarm(c)
			c.passTurn()
		}
	}()
	// The turn is taken back before the response is written: once the
	// peer has its response, its next request may arrive at any moment,
	// and the watch must not pass the turn for it.
	c.handle(req, size, func() {
		handled = true
		if kept = c.watch.state.CompareAndSwap(inline, off); kept {
			c.s.watch.disarm(c)
		}
	})
	return kept
}

// armLone arms the watch for a lone request and returns the arming's
// number, or false when the request is not alone or cannot be watched.
func (c *conn) armLone() (uint64, bool) {
	if c.br.Buffered() > 0 || len(c.sem) > 1 {
		return 0, false
	}
	if !c.watch.tried {
		c.watch.tried = true
		if rc := transport.RawSocket(c.nc); rc != nil {
			if w := c.s.readWatch(); w != nil {
				w.register(c, rc)
			}
		}
	}
	if c.watch.rc == nil {
		return 0, false
	}
	w := c.s.watch
	c.watch.gen++
	gen := c.watch.gen
	inline := watchWord(gen, watchInline)
	c.watch.state.Store(inline)
	if !w.arm(c) && c.watch.state.CompareAndSwap(inline, watchWord(gen, watchOff)) {
		return 0, false
	}
	// Armed; or the watch passed the turn on while the arming failed (it
	// failed itself, or reported the socket: EPOLLERR and EPOLLHUP come
	// even with no event enabled), and the caller, which no longer holds
	// the turn, must not pass it again: serveRequest's take-back fails.
	return gen, true
}

// bytesArrived is called by the watch when c's socket became readable.
func (c *conn) bytesArrived() {
	w := c.watch.state.Load()
	if w&(1<<watchStateBits-1) != watchInline {
		return // a late event of an arming already taken back
	}
	if c.watch.state.CompareAndSwap(w, w-watchInline+watchPassed) {
		c.passTurn()
	}
}
