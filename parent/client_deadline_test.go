package parent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// TestCallTimeoutSynctest: Options.CallTimeout, enforced by the
// connection's one timer rather than a timer per call, ends each call whose
// context has no deadline exactly on time, however the calls overlap, and
// leaves the connection usable.
func TestCallTimeoutSynctest(t *testing.T) {
	const timeout = time.Minute
	// slow answers the health probe, and no other call.
	slow := func(_ int, c net.Conn, _ <-chan struct{}) { serveHealthOnly(c) }
	tests := []struct {
		name  string
		serve func(n int, c net.Conn, end <-chan struct{}) // end is closed when the test ends
		run   func(t *testing.T, c *Client, dials func() int)
	}{
		{"a cancelable context without a deadline", slow, func(t *testing.T, c *Client, _ func() int) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := time.Now()
			_, err := c.CallRaw(ctx, "m", nil)
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != timeout {
				t.Fatalf("err = %v after %v, want DeadlineExceeded after %v", err, time.Since(start), timeout)
			}
		}},
		{"overlapping calls on one connection", slow, func(t *testing.T, c *Client, _ func() int) {
			start := time.Now()
			type res struct {
				i   int
				err error
				at  time.Duration
			}
			resc := make(chan res, 3)
			for i := range 3 {
				go func() {
					_, err := c.CallRaw(context.Background(), "m", nil)
					resc <- res{i, err, time.Since(start)}
				}()
				time.Sleep(10 * time.Second)
			}
			for range 3 {
				r := <-resc
				want := timeout + time.Duration(r.i)*10*time.Second
				if !errors.Is(r.err, context.DeadlineExceeded) || r.at != want {
					t.Fatalf("call %d: %v after %v, want DeadlineExceeded after %v", r.i, r.err, r.at, want)
				}
			}
		}},
		{"a late response is dropped and the connection kept", func(_ int, c net.Conn, _ <-chan struct{}) {
			serveSlow(c, timeout+time.Second)
		}, func(t *testing.T, c *Client, dials func() int) {
			start := time.Now()
			_, err := c.CallRaw(context.Background(), "m", []byte("slow"))
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != timeout {
				t.Fatalf("err = %v after %v, want DeadlineExceeded after %v", err, time.Since(start), timeout)
			}
			time.Sleep(2 * time.Second) // the late response arrives
			synctest.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
			defer cancel()
			if got, err := c.CallRaw(ctx, "m", []byte("next")); err != nil || string(got) != "next" {
				t.Fatalf("next call: %q, %v", got, err)
			}
			if n := dials(); n != 1 {
				t.Fatalf("%d dials, want 1", n)
			}
		}},
		{"expired while waiting for the turn to write", func(_ int, c net.Conn, end <-chan struct{}) {
			c.Read(make([]byte, 3)) // part of the first request, then stuck
			<-end
		}, func(t *testing.T, c *Client, _ func() int) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
			defer cancel()
			go c.CallRaw(ctx, "a", make([]byte, 100)) // holds the write turn
			synctest.Wait()
			start := time.Now()
			_, err := c.CallRaw(context.Background(), "b", nil)
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting to send") || time.Since(start) != timeout {
				t.Fatalf("err = %v after %v, want DeadlineExceeded waiting to send after %v", err, time.Since(start), timeout)
			}
			cc := c.slots[0].conn
			cc.mu.Lock()
			n, abandoned := len(cc.pending), cc.abandoned
			cc.mu.Unlock()
			if n != 1 || abandoned != 0 {
				t.Fatalf("%d requests pending, %d abandoned; want only the one being written, none abandoned", n, abandoned)
			}
		}},
		{"a silent connection is retired after a call times out", func(n int, c net.Conn, _ <-chan struct{}) {
			if n == 1 {
				io.Copy(io.Discard, c) // reads everything, answers nothing
				return
			}
			serveEcho(c)
		}, func(t *testing.T, c *Client, dials func() int) {
			if _, err := c.CallRaw(context.Background(), "m", nil); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("call to the hung enclave: %v, want DeadlineExceeded", err)
			}
			time.Sleep(silentProbeTimeout + time.Second)
			synctest.Wait()
			if got, err := c.CallRaw(context.Background(), "echo", []byte("after")); err != nil || string(got) != "after" {
				t.Fatalf("call after the probe: %q, %v", got, err)
			}
			if n := dials(); n != 2 {
				t.Fatalf("%d dials, want 2 (the silent connection replaced once)", n)
			}
		}},
		{"too many expired calls recycle the connection", func(n int, c net.Conn, _ <-chan struct{}) {
			if n == 1 {
				serveHealthOnly(c)
				return
			}
			serveEcho(c)
		}, func(t *testing.T, c *Client, dials func() int) {
			defer func(n int) { maxAbandoned = n }(maxAbandoned)
			maxAbandoned = 3
			for i := range 4 {
				ctx, cancel := context.WithCancel(context.Background())
				_, err := c.CallRaw(ctx, "m", nil)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("call %d: err = %v", i, err)
				}
			}
			synctest.Wait()
			if got, err := c.CallRaw(context.Background(), "echo", []byte("x")); err != nil || string(got) != "x" {
				t.Fatalf("call after: %q, %v", got, err)
			}
			if n := dials(); n != 2 {
				t.Fatalf("%d dials, want 2 (the connection recycled once)", n)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				end := make(chan struct{})
				defer close(end)
				dialer, dials := countingPipeDialer(func(n int, c net.Conn) {
					defer c.Close()
					tt.serve(n, c, end)
				})
				c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1, CallTimeout: timeout})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tt.run(t, c, dials)
			})
		})
	}
}

// TestCallResultsNeverCrossSynctest: calls whose deadline falls at the very
// moment their response arrives (fake time makes both happen at once, in
// either order) get their own response or DeadlineExceeded, never another
// call's: a result channel is reused only after its call received its one
// result.
func TestCallResultsNeverCrossSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dialer := delayedEchoDialer()
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var wg sync.WaitGroup
		var ok, expired atomic.Int64
		for g := range 16 {
			wg.Go(func() {
				for i := range 100 {
					body := []byte{byte(i), byte(g), byte(i >> 8)}
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+(i+g)%5)*time.Millisecond)
					got, err := c.CallRaw(ctx, "m", body)
					cancel()
					switch {
					case err == nil && bytes.Equal(got, body):
						ok.Add(1)
					case errors.Is(err, context.DeadlineExceeded):
						expired.Add(1)
					default:
						t.Errorf("call %d/%d: %x, %v; want %x or DeadlineExceeded", g, i, got, err, body)
						return
					}
				}
			})
		}
		wg.Wait()
		if ok.Load() == 0 || expired.Load() == 0 {
			t.Fatalf("%d calls answered, %d expired: want both", ok.Load(), expired.Load())
		}
	})
}

// TestLargeResultsNeverCrossSynctest: as TestCallResultsNeverCrossSynctest,
// with a quarter of the responses too large for the read buffer (the
// leader leaves them to the background reader and waits for the role
// again), calls bounded by CallTimeout, by a context deadline or canceled
// midway: every call gets its own response or its context's error, and
// none waits past its bound.
func TestLargeResultsNeverCrossSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dialer := delayedEchoDialer()
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1, CallTimeout: 3 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ok, ended, large atomic.Int64
		for g := range 12 {
			wg.Go(func() {
				for i := range 60 {
					n := 3
					if (i+g)%4 == 0 {
						n = readBufSize + i
					}
					body := make([]byte, n)
					body[0], body[1], body[2] = byte(i), byte(g), byte(i>>8)
					var ctx context.Context
					var cancel context.CancelFunc
					switch (i + 2*g) % 3 {
					case 0:
						ctx, cancel = context.WithTimeout(context.Background(), time.Duration(1+(i+g)%5)*time.Millisecond)
					case 1:
						ctx, cancel = context.WithCancel(context.Background())
						time.AfterFunc(time.Duration(1+i%4)*time.Millisecond, cancel)
					default: // CallTimeout bounds it
						ctx, cancel = context.WithCancel(context.Background())
					}
					start := time.Now()
					got, err := c.CallRaw(ctx, "m", body)
					cancel()
					switch {
					case err == nil && bytes.Equal(got, body):
						ok.Add(1)
						if n > readBufSize {
							large.Add(1)
						}
					case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
						ended.Add(1)
					default:
						t.Errorf("call %d/%d: %d bytes, %v; want its body or the context's error", g, i, len(got), err)
						return
					}
					if d := time.Since(start); d > 5*time.Millisecond {
						t.Errorf("call %d/%d returned after %v, past every bound", g, i, d)
						return
					}
				}
			})
		}
		wg.Wait()
		c.Close()
		if ok.Load() == 0 || large.Load() == 0 || ended.Load() == 0 {
			t.Fatalf("%d calls answered (%d large), %d ended by their context: want all kinds", ok.Load(), large.Load(), ended.Load())
		}
		time.Sleep(10 * time.Millisecond) // the enclave's last handlers end
	})
}

// delayedEchoDialer dials fake enclaves that echo each request after
// 1+body[0]%5 ms (a health probe at once), replies running concurrently.
func delayedEchoDialer() func(context.Context, string) (net.Conn, error) {
	dialer, _ := countingPipeDialer(func(_ int, c net.Conn) {
		defer c.Close()
		serveFake(&fakeConn{Conn: c}, func(fc *fakeConn, env protocol.Envelope) {
			if len(env.Body) > 0 {
				time.Sleep(time.Duration(1+env.Body[0]%5) * time.Millisecond)
			}
			echoReply(fc, env)
		})
	})
	return dialer
}
