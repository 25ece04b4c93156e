package enclave

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
)

// byteBudget is the server-wide bound on bytes held by requests in flight
// (Config.MaxInFlightBytes). Readers wait in FIFO order for room to admit a
// request, so a large request is not starved by a stream of small ones;
// responses are charged without waiting (force), so a handler never blocks
// on the budget and the budget can never deadlock: whatever is charged is
// released when its response has been written.
type byteBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	waiters list.List     // of *budgetWaiter, oldest first
	waits   atomic.Uint64 // acquires that had to wait
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when n bytes were granted
}

func newByteBudget(limit int64) *byteBudget { return &byteBudget{limit: limit} }

// acquire waits until n bytes fit in the budget (or ctx is done) and charges
// them; a wait is counted when it starts. n must not exceed the limit
// (Config.Validate guarantees MaxFrameSize ≤ MaxInFlightBytes); a larger n is
// clamped to the limit so it is admitted once the budget is empty.
func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	n = min(n, b.limit)
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.used+n <= b.limit {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
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
		b.used -= n
	default:
		b.waiters.Remove(e)
	}
	// The head of the queue may have changed, or bytes were returned.
	b.grantLocked()
	return context.Cause(ctx)
}

// charge adds n bytes without waiting (responses); release them later.
func (b *byteBudget) charge(n int64) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

// release returns n bytes and admits the waiters that now fit, in order.
func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.grantLocked()
	b.mu.Unlock()
}

func (b *byteBudget) grantLocked() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if b.used+w.n > b.limit {
			return
		}
		b.used += w.n
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// inUse returns the bytes charged now.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
