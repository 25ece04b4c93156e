package enclave

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// TestReadTurn: a request is handled by the goroutine that read it, which
// first passes the read turn on. Reading goes on while a handler blocks,
// and sequential requests reuse the connection's goroutines instead of
// piling them up.
func TestReadTurn(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *client, release chan struct{})
	}{
		{"a blocked handler holds up no other request", func(t *testing.T, c *client, release chan struct{}) {
			if err := c.send(protocol.Envelope{ID: 1, Method: "hold", Body: []byte("held")}); err != nil {
				t.Fatal(err)
			}
			for id := uint64(2); id < 5; id++ {
				if r := c.call("echo", id, []byte("x")); string(r.Body) != "x" {
					t.Fatalf("echo behind a blocked handler: %+v", r)
				}
			}
			close(release)
			if r, err := c.recv(); err != nil || r.ID != 1 || string(r.Body) != "held" {
				t.Fatalf("held response: %+v, %v", r, err)
			}
		}},
		{"goroutines are reused", func(t *testing.T, c *client, _ chan struct{}) {
			c.call("echo", 1, nil)
			synctest.Wait()
			before := connGoroutines()
			for id := uint64(2); id < 100; id++ {
				c.call("echo", id, nil)
			}
			// Pipelined: several handlers at once, then back to one spare.
			for id := uint64(100); id < 132; id++ {
				if err := c.send(protocol.Envelope{ID: id, Method: "echo"}); err != nil {
					t.Fatal(err)
				}
			}
			for range 32 {
				if _, err := c.recv(); err != nil {
					t.Fatal(err)
				}
			}
			synctest.Wait()
			if after := connGoroutines(); after > before+1 {
				t.Fatalf("%d connection goroutines after 130 requests, %d after the first: the connection keeps more than one spare", after, before)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				_, ln, stop := bubbleServer(t, bubbleConfig(), func(s *Server) {
					s.Handle("hold", func(ctx context.Context, body []byte) ([]byte, error) {
						<-release
						return body, nil
					})
				})
				c := pipeClient(t, ln)
				tt.run(t, c, release)
				c.nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestHandlerGoexit: a handler that ends its goroutine (runtime.Goexit),
// here the connection's first one, sends no response but stops nothing
// else: later requests are served, and at shutdown the connection is
// closed and every goroutine ends.
func TestHandlerGoexit(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		_, ln, stop := bubbleServer(t, bubbleConfig(), func(s *Server) {
			s.Handle("exit", func(context.Context, []byte) ([]byte, error) {
				runtime.Goexit()
				return nil, nil
			})
		})
		c := pipeClient(t, ln)
		for id := uint64(1); id < 4; id++ {
			if err := c.send(protocol.Envelope{ID: id, Method: "exit"}); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if r := c.call("echo", 10+id, []byte("x")); string(r.Body) != "x" {
				t.Fatalf("echo after Goexit: %+v", r)
			}
		}
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }()
		c.expectClosed(time.Second)
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
	})
}

// connGoroutines counts the goroutines running a connection's code (its
// serve goroutine, workers and spares). runtime.NumGoroutine would also
// count goroutines of earlier tests still ending, outside the bubble.
func connGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "enclave.(*conn).") {
			count++
		}
	}
	return count
}
