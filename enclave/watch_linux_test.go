package enclave

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// TestLoneRequests: on a bare socket, a request with nothing else of its
// connection in flight is handled by the goroutine that read it, which
// keeps the read turn (no goroutine is readied per request); a request
// that arrives while such a handler runs is still read and served at once,
// whatever the handler does meanwhile.
func TestLoneRequests(t *testing.T) {
	type env struct {
		s       *Server
		c       *client
		release chan struct{}
		started chan struct{}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e env)
	}{
		{"sequential requests pass no turn", func(t *testing.T, e env) {
			e.c.call("echo", 1, nil) // the connection's goroutine exists now
			before := e.s.handoffs.Load()
			for id := uint64(2); id < 102; id++ {
				if r := e.c.call("echo", id, []byte("x")); string(r.Body) != "x" {
					t.Fatalf("echo: %+v", r)
				}
			}
			if n := e.s.handoffs.Load() - before; n != 0 {
				t.Fatalf("100 sequential requests passed the read turn %d times, want 0", n)
			}
		}},
		{"a request behind a blocked lone handler is served", func(t *testing.T, e env) {
			if err := e.c.send(protocol.Envelope{ID: 1, Method: "hold", Body: []byte("held")}); err != nil {
				t.Fatal(err)
			}
			<-e.started
			for id := uint64(2); id < 5; id++ {
				if r := e.c.call("echo", id, []byte("x")); string(r.Body) != "x" {
					t.Fatalf("echo behind a blocked handler: %+v", r)
				}
			}
			close(e.release)
			if r, err := e.c.recv(); err != nil || r.ID != 1 || string(r.Body) != "held" {
				t.Fatalf("held response: %+v, %v", r, err)
			}
		}},
		{"a peer that stops sending gets the lone handler's response", func(t *testing.T, e env) {
			if err := e.c.send(protocol.Envelope{ID: 1, Method: "hold", Body: []byte("held")}); err != nil {
				t.Fatal(err)
			}
			<-e.started
			if err := e.c.nc.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			close(e.release)
			if r, err := e.c.recv(); err != nil || r.ID != 1 || string(r.Body) != "held" {
				t.Fatalf("held response after a half close: %+v, %v", r, err)
			}
			e.c.expectClosed(5 * time.Second)
		}},
		{"a lone handler that ends its goroutine keeps the connection read", func(t *testing.T, e env) {
			for id := uint64(1); id < 4; id++ {
				if err := e.c.send(protocol.Envelope{ID: id, Method: "exit"}); err != nil {
					t.Fatal(err)
				}
				if r := e.c.call("echo", 10+id, []byte("x")); string(r.Body) != "x" {
					t.Fatalf("echo after Goexit: %+v", r)
				}
			}
		}},
		{"a failed watch passes the turn of a running lone handler", func(t *testing.T, e env) {
			if err := e.c.send(protocol.Envelope{ID: 1, Method: "hold", Body: []byte("held")}); err != nil {
				t.Fatal(err)
			}
			<-e.started
			e.s.watch.f.Close() // its goroutine ends: every armed turn is passed on
			if r := e.c.call("echo", 2, []byte("x")); string(r.Body) != "x" {
				t.Fatalf("echo after the watch failed: %+v", r)
			}
			close(e.release)
			if r, err := e.c.recv(); err != nil || r.ID != 1 {
				t.Fatalf("held response: %+v, %v", r, err)
			}
			before := e.s.handoffs.Load()
			e.c.call("echo", 3, nil)
			if e.s.handoffs.Load() == before {
				t.Fatal("a request after the watch failed was handled without passing the turn")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			e := env{release: make(chan struct{}), started: make(chan struct{}, 1)}
			var addr string
			e.s, addr = startServer(t, testConfig(), func(s *Server) {
				s.Handle("hold", func(ctx context.Context, body []byte) ([]byte, error) {
					e.started <- struct{}{}
					select {
					case <-e.release:
						return body, nil
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				})
				s.Handle("exit", func(context.Context, []byte) ([]byte, error) {
					runtime.Goexit()
					return nil, nil
				})
			})
			e.c = dial(t, addr)
			tt.run(t, e)
		})
	}
}

// TestLoneRequestsMixed: callers on a few connections, each call alone on
// its connection or pipelined behind others, handlers of varying length:
// every response reaches its own caller with its own body, so the read
// turn is never held by two goroutines (run it with -race).
func TestLoneRequestsMixed(t *testing.T) {
	checkLeaks(t)
	_, addr := startServer(t, testConfig(), func(s *Server) {
		s.Handle("spin", func(ctx context.Context, body []byte) ([]byte, error) {
			n, _ := strconv.Atoi(string(body[:bytes.IndexByte(body, '/')]))
			for range n {
				runtime.Gosched()
			}
			return body, nil
		})
	})
	const conns, callers, calls = 3, 4, 200
	var wg sync.WaitGroup
	for range conns {
		c := dial(t, addr)
		var (
			wmu     sync.Mutex // one request written at a time
			pmu     sync.Mutex
			pending = map[uint64]chan protocol.Envelope{}
			nextID  uint64
		)
		go func() {
			for {
				r, err := c.recv()
				if err != nil {
					return
				}
				pmu.Lock()
				ch := pending[r.ID]
				delete(pending, r.ID)
				pmu.Unlock()
				if ch == nil {
					t.Errorf("response to unknown request %d", r.ID)
					return
				}
				ch <- r
			}
		}()
		for g := range callers {
			wg.Go(func() {
				for i := range calls {
					body := fmt.Sprintf("%d/%d/%d", (i*7+g)%5, g, i)
					ch := make(chan protocol.Envelope, 1)
					wmu.Lock()
					pmu.Lock()
					nextID++
					id := nextID
					pending[id] = ch
					pmu.Unlock()
					err := c.send(protocol.Envelope{ID: id, Method: "spin", Body: []byte(body)})
					wmu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
					if r := <-ch; r.Code != 0 || string(r.Body) != body {
						t.Errorf("request %d (%s): response %+v", id, body, r)
						return
					}
					if i%3 == g%3 {
						time.Sleep(time.Duration(i%4) * 100 * time.Microsecond) // let some calls be alone
					}
				}
			})
		}
	}
	wg.Wait()
}

// armRaceConn is the RawConn of a socket whose next Control first runs
// during (the watch reporting the socket meanwhile) and then fails as on a
// socket closed meanwhile.
type armRaceConn struct {
	syscall.RawConn
	during func()
}

func (rc *armRaceConn) Control(f func(fd uintptr)) error {
	if during := rc.during; during != nil {
		rc.during = nil
		during()
		return net.ErrClosed
	}
	return rc.RawConn.Control(f)
}

// TestArmFailsAfterTheWatchPassedTheTurn: the watch passes the turn of a
// lone request on (EPOLLHUP and EPOLLERR are reported even while no event
// is enabled; or the watch fails) while its arming fails (a reset: the new
// turn holder read it and closed the socket). The request's goroutine no
// longer holds the turn and must not pass it a second time: two
// goroutines would read the connection, and both end its read loop.
func TestArmFailsAfterTheWatchPassedTheTurn(t *testing.T) {
	checkLeaks(t)
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", echo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl := dial(t, "tcp://"+ln.Addr().String())
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, context.Background(), nc)
	c.br = bufio.NewReaderSize(retryConn{nc}, readBufSize)
	c.fr, _ = protocol.NewFrameReader(c.br, s.cfg.MaxFrameSize)
	rc := transport.RawSocket(nc)
	w := s.readWatch()
	if rc == nil || w == nil {
		t.Fatal("no read watch for a TCP connection")
	}
	w.register(c, rc)
	if c.watch.rc == nil {
		t.Fatal("registration failed")
	}
	c.watch.tried = true
	c.watch.rc = &armRaceConn{RawConn: rc, during: c.bytesArrived}

	if err := cl.send(protocol.Envelope{ID: 1, Method: "echo", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	req, size, why, ok := c.readRequest()
	if !ok {
		t.Fatalf("reading the request: %s %v", why.msg, why.err)
	}
	if c.serveRequest(req, size) {
		t.Fatal("the request's goroutine kept a turn the watch had passed on")
	}
	if r, err := cl.recv(); err != nil || r.ID != 1 || string(r.Body) != "x" {
		t.Fatalf("response: %+v, %v", r, err)
	}
	if n := s.handoffs.Load(); n != 1 {
		t.Errorf("the turn was passed %d times, want once (by the watch)", n)
	}
	cl.nc.Close() // the turn holder reads EOF and ends the read loop
	c.finish()
	s.closeReadWatch()
}
