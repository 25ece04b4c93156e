package enclave

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// pipeClosed reports whether the server closed c (without waiting: call
// it after synctest.Wait).
func pipeClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now())
	_, err := c.Read(make([]byte, 1))
	c.SetReadDeadline(time.Time{})
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

// TestEvictAtCap: at MaxConns a newcomer is served and the connection idle
// or stalled the longest is evicted; one with a request in flight is the
// last to go.
func TestEvictAtCap(t *testing.T) {
	// Each held connection does one thing at second i (its index):
	// "call" completes a request (then idle), "partial" sends two bytes of
	// a length prefix (then stalled), "busy" starts a request that blocks
	// (in flight), "silent" only connects (at second 0).
	tests := []struct {
		name   string
		held   []string
		refuse bool
		victim int // index of the evicted connection, -1: the newcomer is refused
	}{
		{"idle longest", []string{"call", "call", "call"}, false, 0},
		{"stalled longest", []string{"partial", "call", "call"}, false, 0},
		{"silent since accept", []string{"call", "silent", "call"}, false, 1},
		{"in flight is last", []string{"busy", "call", "call"}, false, 1},
		{"no request yet goes first", []string{"call", "call", "partial"}, false, 2},
		{"all in flight: oldest", []string{"busy", "busy", "busy"}, false, 0},
		{"refuse at cap", []string{"call", "call", "call"}, true, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			synctest.Test(t, func(t *testing.T) {
				cfg := bubbleConfig()
				cfg.MaxConns = len(tt.held)
				cfg.RefuseAtCap = tt.refuse
				release := make(chan struct{})
				s, ln, stop := bubbleServer(t, cfg, func(s *Server) {
					s.Handle("block", func(ctx context.Context, _ []byte) ([]byte, error) {
						select {
						case <-release:
						case <-ctx.Done():
						}
						return nil, nil
					})
				})
				held := make([]*client, len(tt.held))
				for i := range held {
					held[i] = pipeClient(t, ln)
				}
				synctest.Wait()
				for i, what := range tt.held {
					time.Sleep(time.Second)
					c := held[i]
					switch what {
					case "call":
						c.call("echo", 1, []byte("x"))
					case "partial":
						go c.nc.Write([]byte{0, 0})
					case "busy":
						go c.send(protocol.Envelope{ID: 1, Method: "block"})
					}
					synctest.Wait()
				}
				time.Sleep(time.Second)
				nc, err := ln.Dial()
				if err != nil {
					t.Fatal(err)
				}
				newcomer := newClient(t, nc)
				synctest.Wait()
				if tt.victim < 0 {
					if !pipeClosed(nc) {
						t.Fatal("newcomer not refused")
					}
					if st := s.Stats(); st.RejectedConns != 1 || st.EvictedConns != 0 {
						t.Errorf("stats %+v", st)
					}
				} else {
					if e := newcomer.call("echo", 7, []byte("in")); string(e.Body) != "in" {
						t.Fatalf("newcomer got %+v", e)
					}
					if st := s.Stats(); st.EvictedConns != 1 || st.RejectedConns != 0 {
						t.Errorf("stats %+v", st)
					}
				}
				for i, c := range held {
					if got := pipeClosed(c.nc); got != (i == tt.victim) {
						t.Errorf("held[%d] (%s) closed = %v, want %v", i, tt.held[i], got, i == tt.victim)
					}
				}
				close(release)
				for _, c := range held {
					c.nc.Close()
				}
				nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestEvictionKeepsGoodClient: 100 connections that send two bytes of a
// length prefix, against MaxConns 10, never keep a client with a request
// out; every one of them is evicted or closed at ReadFrameTimeout.
func TestEvictionKeepsGoodClient(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		cfg := bubbleConfig()
		cfg.MaxConns = 10
		s, ln, stop := bubbleServer(t, cfg, nil)
		good := pipeClient(t, ln)
		var bad []net.Conn
		for i := range 100 {
			c, err := ln.Dial()
			if err != nil {
				t.Fatal(err)
			}
			go c.Write([]byte{0, 0})
			bad = append(bad, c)
			synctest.Wait()
			time.Sleep(time.Millisecond)
			if e := good.call("echo", uint64(i), []byte("ok")); string(e.Body) != "ok" {
				t.Fatalf("call %d: %+v", i, e)
			}
		}
		if st := s.Stats(); st.EvictedConns != 100-(10-1) || st.OpenConns != 10 {
			t.Errorf("stats %+v", st)
		}
		time.Sleep(cfg.ReadFrameTimeout)
		synctest.Wait()
		if st := s.Stats(); st.OpenConns != 1 {
			t.Errorf("after ReadFrameTimeout: %+v", st)
		}
		for _, c := range bad {
			c.Close()
		}
		good.nc.Close()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
