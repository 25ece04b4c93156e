package enclave

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
)

// byteBudget is the server-wide bound on bytes held by requests in flight
// (Config.MaxInFlightBytes). It is shared fairly between connections:
//
//   - A connection (a budgetOwner) is admitted a request only while what
//     it holds (its requests and responses being written) is below its
//     share, the limit divided by one more than the connections holding
//     or waiting for bytes (a share is kept free for a newcomer, so a
//     connection alone holds at most half); one that holds nothing may
//     always have a request admitted when it fits. So a connection that pipelines large requests and does
//     not read its responses holds at most about its share, never the
//     whole budget.
//   - A small request (at most smallRequest bytes) from a connection that
//     holds nothing is admitted at once, even when the budget is full: a
//     health check is never queued behind bulk traffic. This adds at most
//     MaxConns × smallRequest bytes to the bound.
//   - Otherwise readers wait in FIFO order for room, so a large request is
//     not starved by a stream of small ones; a waiter over its share is
//     passed over (it does not block the queue) until it is under again.
//
// Responses are charged without waiting (force), so a handler never
// blocks on the budget and the budget can never deadlock: whatever is
// charged is released when its response has been written.
type byteBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	active  int           // owners holding or waiting for bytes
	waiters list.List     // of *budgetWaiter, oldest first
	waits   atomic.Uint64 // acquires that had to wait
}

// budgetOwner is one connection's account in a byteBudget; its fields are
// guarded by the budget's mutex.
type budgetOwner struct {
	held    int64
	waiting int
}

func (o *budgetOwner) isActive() bool { return o.held > 0 || o.waiting > 0 }

type budgetWaiter struct {
	o     *budgetOwner // nil: no fairness (tests of the plain budget)
	n     int64
	ready chan struct{} // closed when n bytes were granted
}

// smallRequest is the largest request admitted at once for a connection
// that holds nothing: 64 KiB, or a 64th of the limit if that is less.
func (b *byteBudget) smallRequest() int64 { return min(64<<10, b.limit/64) }

func newByteBudget(limit int64) *byteBudget { return &byteBudget{limit: limit} }

// acquire is acquireFor without an owner: FIFO admission, no fairness.
func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	return b.acquireFor(ctx, nil, n)
}

// acquireFor waits until n bytes may be admitted for o (see byteBudget; or
// ctx is done) and charges them; a wait is counted when it starts. n must
// not exceed the limit (Config.Validate guarantees MaxFrameSize ≤
// MaxInFlightBytes); a larger n is clamped to the limit so it is admitted
// once the budget is empty.
func (b *byteBudget) acquireFor(ctx context.Context, o *budgetOwner, n int64) error {
	n = min(n, b.limit)
	b.mu.Lock()
	if (o != nil && o.held == 0 && n <= b.smallRequest()) ||
		(b.withinShareLocked(o, n) && b.used+n <= b.limit && !b.eligibleWaiterLocked()) {
		b.addLocked(o, n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{o: o, n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	if o != nil {
		b.setLocked(o, func() { o.waiting++ })
	}
	b.waits.Add(1)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while ctx was being canceled: give the bytes back.
		b.addLocked(o, -n)
	default:
		b.waiters.Remove(e)
		if o != nil {
			b.setLocked(o, func() { o.waiting-- })
		}
	}
	// The head of the queue may have changed, or bytes were returned.
	b.grantLocked()
	return context.Cause(ctx)
}

// withinShareLocked reports whether o may be admitted n more bytes by its
// share; an owner holding nothing always may.
func (b *byteBudget) withinShareLocked(o *budgetOwner, n int64) bool {
	if o == nil || o.held == 0 {
		return true
	}
	active := b.active
	if !o.isActive() {
		active++
	}
	// One share more than there are active owners is kept free, so that
	// a connection that is alone (or first) cannot take the whole budget
	// and keep it when others arrive: a non-reading pipeliner holds at
	// most half of it, and a newcomer's large request finds room.
	return o.held+n <= b.limit/int64(active+1)
}

// eligibleWaiterLocked reports whether a waiter within its share is
// queued: a newcomer must not overtake it.
func (b *byteBudget) eligibleWaiterLocked() bool {
	for e := b.waiters.Front(); e != nil; e = e.Next() {
		w := e.Value.(*budgetWaiter)
		if b.withinShareLocked(w.o, w.n) {
			return true
		}
	}
	return false
}

// setLocked applies change to o's account, keeping the count of active
// owners.
func (b *byteBudget) setLocked(o *budgetOwner, change func()) {
	was := o.isActive()
	change()
	switch now := o.isActive(); {
	case now && !was:
		b.active++
	case was && !now:
		b.active--
	}
}

// addLocked charges n bytes (negative: releases) to the budget and o.
func (b *byteBudget) addLocked(o *budgetOwner, n int64) {
	b.used += n
	if o != nil {
		b.setLocked(o, func() { o.held += n })
	}
}

// charge adds n bytes without waiting (responses); release them later.
func (b *byteBudget) charge(n int64) { b.chargeFor(nil, n) }

// chargeFor is charge on o's account.
func (b *byteBudget) chargeFor(o *budgetOwner, n int64) {
	b.mu.Lock()
	b.addLocked(o, n)
	b.mu.Unlock()
}

// release returns n bytes and admits the waiters that now fit, in order.
func (b *byteBudget) release(n int64) { b.releaseFor(nil, n) }

// releaseFor is release on o's account.
func (b *byteBudget) releaseFor(o *budgetOwner, n int64) {
	b.mu.Lock()
	b.addLocked(o, -n)
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked admits waiters in FIFO order; one over its share is passed
// over, and the first within its share that does not fit stops the scan.
func (b *byteBudget) grantLocked() {
	for e := b.waiters.Front(); e != nil; {
		next := e.Next()
		w := e.Value.(*budgetWaiter)
		if !b.withinShareLocked(w.o, w.n) {
			e = next
			continue
		}
		if b.used+w.n > b.limit {
			return
		}
		b.waiters.Remove(e)
		if w.o != nil {
			b.setLocked(w.o, func() { w.o.waiting-- })
		}
		b.addLocked(w.o, w.n)
		close(w.ready)
		e = next
	}
}

// inUse returns the bytes charged now.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
