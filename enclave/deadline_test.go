package enclave

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
)

// Deadline tests run in synctest bubbles over net.Pipe: time is fake, so
// each timeout is checked to the nanosecond without sleeping.

func bubbleConfig() Config {
	cfg := testConfig()
	cfg.IdleTimeout = 60 * time.Second
	cfg.ReadFrameTimeout = 5 * time.Second
	cfg.WriteTimeout = 7 * time.Second
	cfg.HandlerTimeout = 20 * time.Second
	cfg.DrainTimeout = 30 * time.Second
	return cfg
}

// bubbleServer starts a server on a pipe listener inside the current bubble.
func bubbleServer(t *testing.T, cfg Config, setup func(*Server)) (*Server, *pipeListener, func() error) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", echo)
	if setup != nil {
		setup(s)
	}
	ln := newPipeListener(nil)
	return s, ln, serveOn(s, ln)
}

func pipeClient(t *testing.T, ln *pipeListener) *client {
	t.Helper()
	nc, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, nc)
}

// openAfter reports whether the server still holds a connection after d
// more of fake time.
func openAfter(s *Server, d time.Duration) bool {
	time.Sleep(d)
	synctest.Wait()
	return s.Stats().OpenConns > 0
}

func TestDeadlines(t *testing.T) {
	cfg := bubbleConfig()
	tests := []struct {
		name    string
		timeout time.Duration
		act     func(t *testing.T, c *client)
	}{
		{"idle timeout: nothing sent", cfg.IdleTimeout, func(*testing.T, *client) {}},
		{"idle timeout after a request", cfg.IdleTimeout, func(t *testing.T, c *client) {
			c.call("echo", 1, []byte("x"))
		}},
		{"read-frame timeout: partial length prefix", cfg.ReadFrameTimeout, func(t *testing.T, c *client) {
			mustWrite(t, c, []byte{0, 0})
		}},
		{"read-frame timeout: partial payload", cfg.ReadFrameTimeout, func(t *testing.T, c *client) {
			mustWrite(t, c, []byte{0, 0, 0, 10, 0xa3})
		}},
		{"write timeout: responses never read", cfg.WriteTimeout, func(t *testing.T, c *client) {
			if err := c.send(protocol.Envelope{ID: 1, Method: "echo", Body: []byte("unread")}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			synctest.Test(t, func(t *testing.T) {
				s, ln, stop := bubbleServer(t, cfg, nil)
				c := pipeClient(t, ln)
				tt.act(t, c)
				synctest.Wait()
				if !openAfter(s, tt.timeout-time.Millisecond) {
					t.Fatalf("connection closed before the %v timeout", tt.timeout)
				}
				if openAfter(s, time.Millisecond) {
					t.Fatalf("connection still open at the %v timeout", tt.timeout)
				}
				c.nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func mustWrite(t *testing.T, c *client, b []byte) {
	t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestReadFrameTimeoutPerFrame: the frame timer starts at each frame's
// first byte, so a slow but steady client is not cut off by it.
func TestReadFrameTimeoutPerFrame(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		s, ln, stop := bubbleServer(t, cfg, nil)
		c := pipeClient(t, ln)
		for i := range uint64(5) {
			time.Sleep(cfg.ReadFrameTimeout * 2) // idle between frames is fine
			c.call("echo", i, nil)
		}
		if st := s.Stats(); st.DroppedConns != 0 || st.OpenConns != 1 {
			t.Fatalf("stats %+v", st)
		}
		c.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHandlerTimeout(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		_, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("block", func(ctx context.Context, _ []byte) ([]byte, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			})
		})
		c := pipeClient(t, ln)
		start := time.Now()
		r := c.call("block", 3, nil)
		if r.Code != protocol.CodeTimeout || time.Since(start) != cfg.HandlerTimeout {
			t.Fatalf("code %d after %v; want timeout after %v", r.Code, time.Since(start), cfg.HandlerTimeout)
		}
		c.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMaxInFlight: the server runs at most MaxInFlight handlers per
// connection and stops reading until one finishes.
func TestMaxInFlight(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.MaxInFlight = 2
		var running, peak atomic.Int32
		release := make(chan struct{})
		_, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("hold", func(ctx context.Context, body []byte) ([]byte, error) {
				n := running.Add(1)
				if n > peak.Load() {
					peak.Store(n)
				}
				defer running.Add(-1)
				<-release
				return body, nil
			})
		})
		c := pipeClient(t, ln)
		go func() {
			for i := range uint64(6) {
				if err := c.send(protocol.Envelope{ID: i, Method: "hold"}); err != nil {
					return
				}
			}
		}()
		synctest.Wait()
		if running.Load() != 2 {
			t.Fatalf("%d handlers running, want MaxInFlight=2", running.Load())
		}
		close(release)
		for range 6 {
			if _, err := c.recv(); err != nil {
				t.Fatal(err)
			}
		}
		if peak.Load() != 2 {
			t.Fatalf("peak %d handlers, want 2", peak.Load())
		}
		c.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDrain: on cancel the server stops accepting, lets in-flight requests
// finish and write their responses, then returns.
func TestDrain(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		_, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("work", func(ctx context.Context, body []byte) ([]byte, error) {
				select {
				case <-time.After(10 * time.Second):
					return []byte("done"), nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			})
		})
		c := pipeClient(t, ln)
		idle := pipeClient(t, ln)
		if err := c.send(protocol.Envelope{ID: 1, Method: "work"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }()
		synctest.Wait()
		if _, err := ln.Dial(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("dial during drain: %v; want the listener closed", err)
		}
		idle.expectClosed(time.Second) // idle connections go at once
		r, err := c.recv()
		if err != nil || string(r.Body) != "done" {
			t.Fatalf("in-flight request: %+v, %v", r, err)
		}
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Fatalf("drain took %v, want the 10s the request needed", d)
		}
		c.expectClosed(time.Second)
	})
}

// TestDrainTimeout: a request that outlives DrainTimeout has its context
// canceled; Serve then returns with every goroutine gone.
func TestDrainTimeout(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.HandlerTimeout = time.Hour // outlives the drain
		canceled := make(chan struct{})
		_, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("forever", func(ctx context.Context, _ []byte) ([]byte, error) {
				<-ctx.Done()
				close(canceled)
				return nil, ctx.Err()
			})
		})
		c := pipeClient(t, ln)
		if err := c.send(protocol.Envelope{ID: 1, Method: "forever"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != cfg.DrainTimeout {
			t.Fatalf("Serve returned after %v, want DrainTimeout %v", d, cfg.DrainTimeout)
		}
		<-canceled
		c.expectClosed(time.Second)
	})
}

// TestDrainWaitsForStubbornHandler: a handler that ignores cancellation
// keeps Serve from returning (no goroutine is abandoned), and the wait is
// reported in the log.
func TestDrainWaitsForStubbornHandler(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		var logs syncbuf.Buffer
		cfg := bubbleConfig()
		cfg.Logger = newTextLogger(&logs)
		cfg.HandlerTimeout = time.Hour
		_, ln, stop := bubbleServer(t, cfg, func(s *Server) {
			s.Handle("stubborn", func(ctx context.Context, _ []byte) ([]byte, error) {
				time.Sleep(cfg.DrainTimeout + 12*time.Second) // ignores ctx
				return nil, nil
			})
		})
		c := pipeClient(t, ln)
		if err := c.send(protocol.Envelope{ID: 1, Method: "stubborn"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != cfg.DrainTimeout+12*time.Second {
			t.Fatalf("Serve returned after %v, before the handler did", d)
		}
		if n := strings.Count(logs.String(), "ignore their canceled context"); n != 2 {
			t.Fatalf("%d reports of the stubborn handler in 12s, want 2:\n%s", n, logs.String())
		}
		c.nc.Close()
	})
}
