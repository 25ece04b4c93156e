package parent

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestCallEndedBeforeWriteKeepsConn: a call whose context ended by the time
// it got its turn to write sends nothing and leaves the connection (and the
// calls in flight on it) alone; before, the past write deadline set for the
// ended context could tear the connection down.
func TestCallEndedBeforeWriteKeepsConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		go serveEcho(b)
		defer b.Close()
		cc, err := newClientConn(a, 0)
		if err != nil {
			t.Fatal(err)
		}
		go cc.readLoop()
		defer cc.fail(ErrClientClosed)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for i := range 200 {
			if _, err := cc.call(ctx, "m", nil); !errors.Is(err, context.Canceled) {
				t.Fatalf("call %d: err = %v, want context.Canceled", i, err)
			}
			if cc.broken() {
				t.Fatalf("call %d with an ended context broke the connection: %v", i, cc.err())
			}
		}
		if got, err := cc.call(context.Background(), "m", []byte("ok")); err != nil || string(got) != "ok" {
			t.Fatalf("call after = %q, %v", got, err)
		}
	})
}

// TestCloseEndsDialSynctest: Close makes a call that waits for a new
// connection return ErrClientClosed at once, not when the dial times out.
func TestCloseEndsDialSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		dials := 0
		dialer := func(ctx context.Context, addr string) (net.Conn, error) {
			mu.Lock()
			dials++
			n := dials
			mu.Unlock()
			if n == 1 {
				a, b := net.Pipe()
				go func() { defer b.Close(); serveEcho(b) }()
				return a, nil
			}
			<-ctx.Done() // an enclave that does not answer the connection
			return nil, ctx.Err()
		}
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 2, DialTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		type res struct {
			err error
			d   time.Duration
		}
		resc := make(chan res, 2)
		// Both calls pick the empty slot 1: the first dials it, the second
		// waits for that dial.
		for range 2 {
			go func() {
				start := time.Now()
				_, err := c.CallRaw(context.Background(), "m", nil)
				resc <- res{err, time.Since(start)}
			}()
			synctest.Wait()
			c.next.Add(1) // skip slot 0: the next call picks slot 1 again
		}
		synctest.Wait()
		c.Close()
		for range 2 {
			r := <-resc
			if !errors.Is(r.err, ErrClientClosed) || r.d != 0 {
				t.Fatalf("call during Close: %v after %v, want ErrClientClosed at once", r.err, r.d)
			}
		}
	})
}

// TestCallRetriedWhenNotSentSynctest: a call waiting for its turn to write
// when the connection breaks sent nothing, so it is retried on a new
// connection and succeeds; the call whose write broke fails with
// ErrConnLost.
func TestCallRetriedWhenNotSentSynctest(t *testing.T) {
	for range 20 { // the race it guards against is in the scheduler's hands
		synctest.Test(t, func(t *testing.T) {
			drop := make(chan struct{})
			dialer, _ := countingPipeDialer(func(n int, c net.Conn) {
				defer c.Close()
				if n == 1 {
					c.Read(make([]byte, 3)) // part of the first request, then stuck
					<-drop
					return
				}
				serveEcho(c)
			})
			c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			errA := make(chan error, 1)
			go func() {
				_, err := c.CallRaw(context.Background(), "a", []byte("first"))
				errA <- err
			}()
			synctest.Wait() // A holds the write turn, blocked
			type res struct {
				b   []byte
				err error
			}
			resB := make(chan res, 1)
			go func() {
				b, err := c.CallRaw(context.Background(), "b", []byte("second"))
				resB <- res{b, err}
			}()
			synctest.Wait() // B waits for the write turn
			close(drop)
			if err := <-errA; !errors.Is(err, ErrConnLost) {
				t.Fatalf("call A: %v, want ErrConnLost", err)
			}
			if r := <-resB; r.err != nil || string(r.b) != "second" {
				t.Fatalf("call B = %q, %v; want it retried on a new connection", r.b, r.err)
			}
		})
	}
}
