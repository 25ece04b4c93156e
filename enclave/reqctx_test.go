package enclave

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// TestHandlerContext: the context a handler gets ends at its request's
// deadline (HandlerTimeout after the handler started) whether the handler
// waits on Done, polls Err, or derives a context of its own; deadlines of
// several requests on one connection each end on time; the context ends
// when the connection is aborted, and once the handler has returned.
func TestHandlerContext(t *testing.T) {
	const ht = 20 * time.Second // bubbleConfig's HandlerTimeout
	// wait blocks on ctx.Done and reports when it was closed and why.
	wait := func(ctx context.Context, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	tests := []struct {
		name    string
		handler Handler
		run     func(t *testing.T, c *client)
	}{
		{"Done is closed at the deadline", func(ctx context.Context, _ []byte) ([]byte, error) {
			start := time.Now()
			if d, ok := ctx.Deadline(); !ok || d != start.Add(ht) {
				return nil, errors.New("wrong deadline")
			}
			<-ctx.Done()
			if time.Since(start) != ht || !errors.Is(ctx.Err(), context.DeadlineExceeded) ||
				!errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return nil, errors.New("Done closed at the wrong time or with the wrong error")
			}
			return []byte("ok"), nil
		}, func(t *testing.T, c *client) {
			if r := c.call("h", 1, nil); string(r.Body) != "ok" {
				t.Fatalf("response %+v", r)
			}
		}},
		{"Err reports the deadline without Done", func(ctx context.Context, _ []byte) ([]byte, error) {
			time.Sleep(ht - time.Nanosecond)
			if ctx.Err() != nil {
				return nil, errors.New("ended before the deadline")
			}
			time.Sleep(time.Nanosecond)
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, errors.New("not ended at the deadline")
			}
			select {
			case <-ctx.Done():
			default:
				return nil, errors.New("Done open after Err reported the deadline")
			}
			return []byte("ok"), nil
		}, func(t *testing.T, c *client) {
			if r := c.call("h", 1, nil); string(r.Body) != "ok" {
				t.Fatalf("response %+v", r)
			}
		}},
		{"a derived context ends at the request deadline", func(ctx context.Context, _ []byte) ([]byte, error) {
			start := time.Now()
			ctx2, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			ran := make(chan struct{})
			context.AfterFunc(ctx, func() { close(ran) })
			stopped := context.AfterFunc(ctx, func() { panic("stopped AfterFunc ran") })
			if !stopped() {
				return nil, errors.New("AfterFunc could not be stopped")
			}
			<-ctx2.Done()
			<-ran
			if time.Since(start) != ht || !errors.Is(ctx2.Err(), context.DeadlineExceeded) {
				return nil, errors.New("derived context ended at the wrong time or with the wrong error")
			}
			return []byte("ok"), nil
		}, func(t *testing.T, c *client) {
			if r := c.call("h", 1, nil); string(r.Body) != "ok" {
				t.Fatalf("response %+v", r)
			}
		}},
		{"staggered deadlines on one connection", wait, func(t *testing.T, c *client) {
			start := time.Now()
			for id := range uint64(3) {
				if err := c.send(protocol.Envelope{ID: id, Method: "h"}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(3 * time.Second)
			}
			for id := range uint64(3) {
				r, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				want := ht + time.Duration(id)*3*time.Second
				if r.ID != id || r.Code != protocol.CodeTimeout || time.Since(start) != want {
					t.Fatalf("response %+v after %v; want id %d, a timeout after %v", r, time.Since(start), id, want)
				}
			}
		}},
		{"an earlier deadline asked for later", func(ctx context.Context, body []byte) ([]byte, error) {
			if string(body) == "late" {
				time.Sleep(5 * time.Second) // the next request asks for Done first
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}, func(t *testing.T, c *client) {
			start := time.Now()
			if err := c.send(protocol.Envelope{ID: 1, Method: "h", Body: []byte("late")}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := c.send(protocol.Envelope{ID: 2, Method: "h"}); err != nil {
				t.Fatal(err)
			}
			for _, want := range []struct {
				id uint64
				at time.Duration
			}{{1, ht}, {2, ht + time.Second}} {
				r, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				if r.ID != want.id || r.Code != protocol.CodeTimeout || time.Since(start) != want.at {
					t.Fatalf("response %+v after %v; want id %d, a timeout after %v", r, time.Since(start), want.id, want.at)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			synctest.Test(t, func(t *testing.T) {
				_, ln, stop := bubbleServer(t, bubbleConfig(), func(s *Server) { s.Handle("h", tt.handler) })
				c := pipeClient(t, ln)
				tt.run(t, c)
				c.nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestHandlerContextEnds: the context ends when the connection is aborted
// (a hostile frame), and a context kept after its handler returned is
// canceled.
func TestHandlerContextEnds(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		var kept atomic.Pointer[context.Context]
		ended := make(chan error, 1)
		_, ln, stop := bubbleServer(t, bubbleConfig(), func(s *Server) {
			s.Handle("keep", func(ctx context.Context, body []byte) ([]byte, error) {
				kept.Store(&ctx)
				return body, nil
			})
			s.Handle("wait", func(ctx context.Context, _ []byte) ([]byte, error) {
				<-ctx.Done()
				ended <- ctx.Err()
				return nil, ctx.Err()
			})
		})
		c := pipeClient(t, ln)
		c.call("keep", 1, []byte("x"))
		ctx := *kept.Load()
		select {
		case <-ctx.Done():
		default:
			t.Fatal("a handler's context is open after the handler returned")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("kept context: Err = %v, want Canceled", ctx.Err())
		}

		if err := c.send(protocol.Envelope{ID: 2, Method: "wait"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		mustWrite(t, c, []byte{0xff, 0xff, 0xff, 0xff}) // not protocol v1: the connection is aborted
		if err := <-ended; !errors.Is(err, context.Canceled) || time.Since(start) != 0 {
			t.Fatalf("handler ended with %v after %v; want Canceled at once", err, time.Since(start))
		}
		c.expectClosed(time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
