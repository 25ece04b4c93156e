package enclave

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

func TestByteBudget(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		b := newByteBudget(100)
		ctx := context.Background()
		if err := b.acquire(ctx, 60); err != nil || b.waits.Load() != 0 {
			t.Fatalf("acquire(60) of 100 = %v after %d waits; want at once", err, b.waits.Load())
		}
		// FIFO: 50 does not fit; 10 would, but must not overtake it.
		granted := make(chan int64, 2)
		for _, n := range []int64{50, 10} {
			go func() {
				if err := b.acquire(ctx, n); err != nil {
					t.Error(err)
				}
				granted <- n
			}()
			synctest.Wait()
		}
		if len(granted) != 0 || b.inUse() != 60 || b.waits.Load() != 2 {
			t.Fatalf("%d granted while the head of the queue does not fit; in use %d, %d waits", len(granted), b.inUse(), b.waits.Load())
		}
		b.release(60)
		if x, y := <-granted, <-granted; x+y != 60 {
			t.Fatalf("granted %d and %d, want 50 and 10", x, y)
		}
		if b.inUse() != 60 {
			t.Fatalf("in use %d, want 60", b.inUse())
		}

		// Responses are charged without waiting, even over the limit, and
		// hold back new requests until released.
		b.charge(80)
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := b.acquire(cctx, 1)
		cancel()
		if time.Since(start) != time.Second || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("acquire over a forced charge = %v after %v; want a wait ended by the deadline", err, time.Since(start))
		}
		b.release(80)
		b.release(60)
		if b.inUse() != 0 || b.waiters.Len() != 0 {
			t.Fatalf("in use %d, %d waiters after releasing everything", b.inUse(), b.waiters.Len())
		}

		// A canceled waiter at the head no longer blocks those behind it.
		if err := b.acquire(ctx, 100); err != nil {
			t.Fatal(err)
		}
		hctx, hcancel := context.WithCancel(ctx)
		headDone := make(chan error, 1)
		go func() { headDone <- b.acquire(hctx, 100) }()
		synctest.Wait()
		got := make(chan struct{})
		go func() {
			if err := b.acquire(ctx, 1); err == nil {
				close(got)
			}
		}()
		synctest.Wait()
		b.release(99)
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a waiter overtook the head of the queue")
		default:
		}
		hcancel()
		if err := <-headDone; !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled acquire = %v", err)
		}
		<-got
		if b.inUse() != 2 {
			t.Fatalf("in use %d, want 2", b.inUse())
		}
		// A request larger than the whole budget is clamped, not stuck.
		b.release(2)
		if err := b.acquire(ctx, 1000); err != nil || b.inUse() != 100 {
			t.Fatalf("oversized acquire: %v, in use %d", err, b.inUse())
		}
	})
}

// TestMaxInFlightBytes: requests across all connections hold at most
// MaxInFlightBytes; a connection whose request does not fit stops being
// read until bytes are released, then its request runs. Without the budget
// three requests would run at once here.
func TestMaxInFlightBytes(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.MaxFrameSize = 1024
		cfg.MaxInFlightBytes = 2048
		var running atomic.Int32
		release := make(chan struct{})
		s, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("hold", func(ctx context.Context, body []byte) ([]byte, error) {
				running.Add(1)
				defer running.Add(-1)
				select {
				case <-release:
					return body[:1], nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			})
		})
		body := bytes.Repeat([]byte{'b'}, 900)
		frameLen := len(request(1, "hold", body))
		a, b := pipeClient(t, ln), pipeClient(t, ln)
		responses := make(chan protocol.Envelope, 3)
		for _, c := range []*client{a, b} {
			go func() {
				for {
					e, err := c.recv()
					if err != nil {
						return
					}
					responses <- e
				}
			}()
		}
		for i := range uint64(2) {
			if err := a.send(protocol.Envelope{ID: i, Method: "hold", Body: body}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if err := b.send(protocol.Envelope{ID: 7, Method: "hold", Body: body}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		st := s.Stats()
		if running.Load() != 2 || st.BudgetWaits != 1 || st.InFlightBytes != uint64(2*frameLen) {
			t.Fatalf("%d handlers running, stats %+v; want 2 running, 1 budget wait, %d bytes in flight", running.Load(), st, 2*frameLen)
		}
		release <- struct{}{} // one of a's requests finishes
		if e := <-responses; e.Code != 0 || e.ID == 7 {
			t.Fatalf("first response %+v", e)
		}
		synctest.Wait()
		if running.Load() != 2 {
			t.Fatalf("%d handlers running after a release, want b's request admitted", running.Load())
		}
		close(release)
		ids := map[uint64]bool{}
		for range 2 {
			e := <-responses
			if e.Code != 0 {
				t.Fatalf("response %+v", e)
			}
			ids[e.ID] = true
		}
		if !ids[7] {
			t.Fatalf("b's request was not served: %v", ids)
		}
		synctest.Wait()
		if st := s.Stats(); st.InFlightBytes != 0 {
			t.Fatalf("%d bytes still charged after every response", st.InFlightBytes)
		}
		a.nc.Close()
		b.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBudgetWaitEndsOnShutdown: a connection waiting for budget does not
// keep the server from stopping, and every charged byte is released.
func TestBudgetWaitEndsOnShutdown(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.MaxFrameSize = 1024
		cfg.MaxInFlightBytes = 1024
		cfg.HandlerTimeout = time.Hour
		s, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("block", func(ctx context.Context, _ []byte) ([]byte, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			})
		})
		a, b := pipeClient(t, ln), pipeClient(t, ln)
		for _, c := range []*client{a, b} {
			go func() { _, _ = io.Copy(io.Discard, c.nc) }()
			if err := c.send(protocol.Envelope{ID: 1, Method: "block", Body: make([]byte, 1000)}); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		if st := s.Stats(); st.BudgetWaits != 1 {
			t.Fatalf("stats %+v; want one connection waiting for budget", st)
		}
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != cfg.DrainTimeout {
			t.Fatalf("Serve returned after %v, want DrainTimeout %v", d, cfg.DrainTimeout)
		}
		if st := s.Stats(); st.InFlightBytes != 0 || st.OpenConns != 0 {
			t.Fatalf("after Serve: %+v; want nothing charged or open", st)
		}
		a.nc.Close()
		b.nc.Close()
	})
}

// TestOversizedResponseNotCopied: a handler result larger than
// MaxFrameSize becomes a too-large error without being encoded (copied)
// into a frame first.
func TestOversizedResponseNotCopied(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.MaxFrameSize = 1024
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, peer := net.Pipe()
	defer srv.Close()
	defer peer.Close()
	c := newConn(s, context.Background(), srv)
	defer c.abort()
	got := make(chan []byte, 1)
	go func() {
		p, _ := protocol.ReadFrame(peer, nil, 0)
		got <- p
	}()
	huge := make([]byte, 32<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c.writeResponse(&protocol.Envelope{ID: 5, Body: huge})
	runtime.ReadMemStats(&after)
	e, err := protocol.UnmarshalEnvelope(<-got)
	if err != nil || e.ID != 5 || e.Code != protocol.CodeTooLarge {
		t.Fatalf("response %+v, %v; want too large", e, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("writing the refusal allocated %d bytes for a %d-byte body", grew, len(huge))
	}
	runtime.KeepAlive(huge)
}

// TestByteBudgetFairShare: an owner alone holds at most half the budget
// (a share is kept free), an owner over its share waits without blocking
// the queue, the first waiter within its share keeps its place, and a
// small request from an owner holding nothing is admitted at once.
func TestByteBudgetFairShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := newByteBudget(1000)
		var a, o2, o3, fresh budgetOwner
		for _, n := range []int64{400, 100} { // alone: a's share is half the budget
			if err := b.acquireFor(ctx, &a, n); err != nil || b.waits.Load() != 0 {
				t.Fatalf("a alone: %v after %d waits", err, b.waits.Load())
			}
		}
		aAlone := make(chan error, 1)
		go func() { aAlone <- b.acquireFor(ctx, &a, 1) }() // past half, although there is room
		synctest.Wait()
		if len(aAlone) != 0 || b.waits.Load() != 1 {
			t.Fatalf("a alone took more than half the budget (waits %d)", b.waits.Load())
		}
		// Newcomers holding nothing are admitted while there is room.
		if err := b.acquireFor(ctx, &o2, 150); err != nil || b.waits.Load() != 1 {
			t.Fatalf("o2's first request: %v after %d waits; want at once", err, b.waits.Load())
		}
		if err := b.acquireFor(ctx, &o3, 300); err != nil || b.waits.Load() != 1 {
			t.Fatalf("o3's first request: %v after %d waits; want at once", err, b.waits.Load())
		}
		// Three active owners: a share is 1000/4 = 250; 950 in use.
		aDone, o2Done := make(chan error, 1), make(chan error, 1)
		go func() { aDone <- b.acquireFor(ctx, &a, 99) }()   // over a's share
		go func() { o2Done <- b.acquireFor(ctx, &o2, 60) }() // within its share, no room
		synctest.Wait()
		if len(aDone) != 0 || len(o2Done) != 0 || b.waits.Load() != 3 {
			t.Fatalf("waits %d: want a and o2 waiting", b.waits.Load())
		}
		// Full budget, but a small request from an idle owner goes at once.
		if err := b.acquireFor(ctx, &fresh, 10); err != nil || b.waits.Load() != 3 {
			t.Fatalf("small request: %v after %d waits; want at once", err, b.waits.Load())
		}
		b.releaseFor(&fresh, 10)
		b.releaseFor(&a, 400) // a: 100, under its share again; 550 used
		synctest.Wait()
		if len(aAlone) != 1 || len(aDone) != 1 || len(o2Done) != 1 {
			t.Fatalf("after a release: granted a %v, a %v, o2 %v; want all", len(aAlone) == 1, len(aDone) == 1, len(o2Done) == 1)
		}
		if <-aAlone != nil || <-aDone != nil || <-o2Done != nil || b.inUse() != 710 {
			t.Fatalf("in use %d, want 710", b.inUse())
		}
		b.releaseFor(&a, 200)
		b.releaseFor(&o2, 210)
		b.releaseFor(&o3, 300)
		if b.inUse() != 0 || b.active != 0 {
			t.Fatalf("in use %d, active %d after releasing everything", b.inUse(), b.active)
		}
	})
}

// TestNonReadingPipelinersDoNotStarveOthers: three connections pipeline
// large requests and never read their responses; another connection's
// small call is answered at once (in fake time), and no pipeliner holds
// much more than its share of MaxInFlightBytes.
func TestNonReadingPipelinersDoNotStarveOthers(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.MaxFrameSize = 8 << 10
		cfg.MaxInFlightBytes = 64 << 10
		s, ln, stop := bubbleServer(t, cfg, nil)
		body := bytes.Repeat([]byte{'p'}, 8000)
		// Each pipeliner starts as soon as it connects: the first is alone
		// for a while, and a share is kept free, so it still cannot take
		// more than half of the budget and keep it.
		var hogs []*client
		for range 3 {
			c := pipeClient(t, ln)
			hogs = append(hogs, c)
			go func() {
				for i := uint64(0); ; i++ {
					if err := c.send(protocol.Envelope{ID: i, Method: "echo", Body: body}); err != nil {
						return
					}
				}
			}()
		}
		synctest.Wait()
		good := pipeClient(t, ln)
		start := time.Now()
		if e := good.call("echo", 1, bytes.Repeat([]byte{'g'}, 64)); e.Code != 0 || len(e.Body) != 64 {
			t.Fatalf("good call: %+v", e)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("good call took %v behind the pipeliners", d)
		}
		s.mu.Lock()
		for c := range s.conns {
			s.budget.mu.Lock()
			held := c.budget.held
			s.budget.mu.Unlock()
			// Share: a third of the limit; plus the responses of the
			// requests admitted under it, each about as large.
			if limit := 2*cfg.MaxInFlightBytes/3 + 2*int64(cfg.MaxFrameSize); held > limit {
				t.Errorf("a connection holds %d bytes, more than about its share (%d)", held, limit)
			}
		}
		s.mu.Unlock()
		for _, c := range hogs {
			c.nc.Close()
		}
		good.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNonReaderStopsBeingRead: once a response write to a connection has
// been stuck for stuckWrite, the server reads nothing more from it, so a
// peer that pipelines without reading cannot pile up requests (up to
// MaxInFlight) and their responses.
func TestNonReaderStopsBeingRead(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		s, ln, stop := bubbleServer(t, cfg, nil)
		hog := pipeClient(t, ln)
		go func() {
			for i := range uint64(40) {
				if err := hog.send(protocol.Envelope{ID: i, Method: "echo", Body: []byte("x")}); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		if n := s.Stats().Requests; n > 2 {
			t.Errorf("%d requests read from a peer that reads no response; want at most 2", n)
		}
		good := pipeClient(t, ln)
		if e := good.call("echo", 1, []byte("ok")); string(e.Body) != "ok" {
			t.Fatalf("good call: %+v", e)
		}
		hog.nc.Close()
		good.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
