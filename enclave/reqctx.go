package enclave

import (
	"context"
	"sync"
	"time"
)

// reqCtx is the context a handler gets: the connection's context (its
// values, and its cancellation when the connection is aborted or evicted)
// with the request's deadline (HandlerTimeout after the handler started),
// canceled once the handler has returned.
//
// It does what context.WithTimeout(conn ctx, HandlerTimeout) did, for one
// allocation per request instead of a context, a timer and two closures:
// a handler that never asks for Done (or AfterFunc) costs nothing more,
// and one that does shares its connection's single deadline timer
// (reqDeadlines) instead of starting a timer of its own. Err is exact
// either way: it reports the deadline once it has passed, whether or not
// the timer has fired yet, and the result is kept, so Done is closed from
// then on.
type reqCtx struct {
	c        *conn
	deadline time.Time

	// Guarded by c.reqs.mu.
	done       chan struct{} // nil until Done is called; closedChan if already ended then
	err        error         // set once, when the context ends
	afters     []*afterFunc  // AfterFunc callbacks not yet run or stopped
	prev, next *reqCtx       // in c.reqs.active while done is open
	active     bool
}

// afterFunc is one callback registered with reqCtx.AfterFunc.
type afterFunc struct{ f func() }

// closedChan is the Done channel of a context that had already ended when
// Done was first called.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

var _ context.Context = (*reqCtx)(nil)

func newReqCtx(c *conn, start time.Time) *reqCtx {
	return &reqCtx{c: c, deadline: start.Add(c.s.cfg.HandlerTimeout)}
}

// Deadline is the request's deadline, or the connection context's if that
// is earlier.
func (r *reqCtx) Deadline() (time.Time, bool) {
	if d, ok := r.c.ctx.Deadline(); ok && d.Before(r.deadline) {
		return d, true
	}
	return r.deadline, true
}

// Value is the connection context's value for key.
func (r *reqCtx) Value(key any) any { return r.c.ctx.Value(key) }

func (r *reqCtx) String() string { return "enclave request context" }

// Err is nil until the context ends, then why: the connection context's
// error, context.DeadlineExceeded, or context.Canceled once the handler
// returned.
func (r *reqCtx) Err() error {
	d := &r.c.reqs
	d.mu.Lock()
	defer d.mu.Unlock()
	r.checkLocked(time.Now())
	return r.err
}

// Done is closed when the context ends. The first call puts the request on
// its connection's deadline timer.
func (r *reqCtx) Done() <-chan struct{} {
	d := &r.c.reqs
	d.mu.Lock()
	defer d.mu.Unlock()
	r.activateLocked()
	return r.done
}

// AfterFunc runs f in its own goroutine once the context ends, as
// context.AfterFunc does; stop unregisters it (false if it already ran or
// was stopped). context.WithCancel and the like use it, so that a context
// derived from a handler's needs no goroutine to watch it.
func (r *reqCtx) AfterFunc(f func()) (stop func() bool) {
	d := &r.c.reqs
	a := &afterFunc{f: f}
	d.mu.Lock()
	defer d.mu.Unlock()
	r.activateLocked()
	if r.err != nil {
		go f()
		return func() bool { return false }
	}
	r.afters = append(r.afters, a)
	return func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for i, x := range r.afters {
			if x == a {
				r.afters = append(r.afters[:i], r.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// checkLocked ends the context if its connection's context ended or its
// deadline has passed by now.
func (r *reqCtx) checkLocked(now time.Time) {
	if r.err != nil {
		return
	}
	if err := r.c.ctx.Err(); err != nil {
		r.endLocked(err)
	} else if !now.Before(r.deadline) {
		r.endLocked(context.DeadlineExceeded)
	}
}

// activateLocked makes the Done channel: closed already if the context has
// ended, else open and watched by the connection's deadline timer.
func (r *reqCtx) activateLocked() {
	if r.done != nil {
		return
	}
	r.checkLocked(time.Now())
	if r.err != nil {
		r.done = closedChan
		return
	}
	r.done = make(chan struct{})
	r.c.reqs.addLocked(r)
}

// endLocked ends the context with err: Done is closed, the AfterFunc
// callbacks start, and the request leaves its connection's timer.
func (r *reqCtx) endLocked(err error) {
	r.err = err
	if r.active {
		r.c.reqs.removeLocked(r)
		close(r.done)
	}
	for _, a := range r.afters {
		go a.f()
	}
	r.afters = nil
}

// finish cancels the context once its handler has returned, as the cancel
// function of context.WithTimeout did.
func (r *reqCtx) finish() {
	d := &r.c.reqs
	d.mu.Lock()
	if r.err == nil {
		r.endLocked(context.Canceled)
	}
	d.mu.Unlock()
}

// reqDeadlines is a connection's one timer for the deadlines of its
// requests whose handlers asked for Done: it fires at the earliest of
// them, ends those that have passed, and is set again for the next. It
// also ends them all when the connection's context ends.
type reqDeadlines struct {
	mu      sync.Mutex
	head    *reqCtx // active requests, in no particular order
	timer   *time.Timer
	armed   time.Time // when the timer fires; zero when it is not set
	unwatch func() bool
	closed  bool // the connection is finished: the timer stays stopped
}

// addLocked puts r on the timer, setting it earlier if r's deadline is.
func (d *reqDeadlines) addLocked(r *reqCtx) {
	r.active = true
	r.next = d.head
	if d.head != nil {
		d.head.prev = r
	}
	d.head = r
	c := r.c
	if d.unwatch == nil {
		// The connection context ends by abort or eviction (or the
		// server's hard stop): its requests' contexts end with it.
		d.unwatch = context.AfterFunc(c.ctx, d.endAll)
	}
	if d.closed || (!d.armed.IsZero() && !r.deadline.Before(d.armed)) {
		return
	}
	d.armed = r.deadline
	wait := time.Until(r.deadline)
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.fire)
	} else {
		d.timer.Reset(wait)
	}
}

func (d *reqDeadlines) removeLocked(r *reqCtx) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		d.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	r.prev, r.next, r.active = nil, nil, false
}

// fire ends the requests whose deadline has passed and sets the timer for
// the earliest of the others.
func (d *reqDeadlines) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armed = time.Time{}
	now := time.Now()
	var next time.Time
	for r := d.head; r != nil; {
		n := r.next
		r.checkLocked(now)
		if r.err == nil && (next.IsZero() || r.deadline.Before(next)) {
			next = r.deadline
		}
		r = n
	}
	if !next.IsZero() && !d.closed {
		d.armed = next
		d.timer.Reset(next.Sub(now))
	}
}

// endAll ends every active request with the connection context's error.
func (d *reqDeadlines) endAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for r := d.head; r != nil; {
		n := r.next
		r.checkLocked(time.Now())
		r = n
	}
}

// close stops the timer and the watch of the connection context; the
// connection's handlers have all returned.
func (d *reqDeadlines) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	if d.unwatch != nil {
		d.unwatch()
	}
}
