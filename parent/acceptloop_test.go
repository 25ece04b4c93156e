package parent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// scriptedListener returns its script's connections and errors in order,
// then blocks until closed.
type scriptedListener struct {
	mu     sync.Mutex
	script []any // net.Conn or error
	closed chan struct{}
	once   sync.Once
	// accepts records when each script entry was taken.
	accepts []time.Time
}

func newScriptedListener(script ...any) *scriptedListener {
	return &scriptedListener{script: script, closed: make(chan struct{})}
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.script) > 0 {
		next := l.script[0]
		l.script = l.script[1:]
		l.accepts = append(l.accepts, time.Now())
		l.mu.Unlock()
		if c, ok := next.(net.Conn); ok {
			return c, nil
		}
		return nil, next.(error)
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *scriptedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func (l *scriptedListener) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.accepts...)
}

// emfile is the error accept gives when the process is out of descriptors.
func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// TestAcceptLoopBackoffSynctest: temporary accept errors are retried with
// a doubling backoff (5 ms up to 1 s) that resets after a success, for the
// ingress and the log sink alike; a permanent error ends Serve with it.
func TestAcceptLoopBackoffSynctest(t *testing.T) {
	servers := map[string]func(ln net.Listener) error{
		"ingress": func(ln net.Listener) error {
			in, err := NewIngress(IngressConfig{Target: "tcp://127.0.0.1:1", Logger: quiet,
				Dialer: func(context.Context, string) (net.Conn, error) { return nil, errors.New("down") }})
			if err != nil {
				t.Fatal(err)
			}
			return in.Serve(context.Background(), ln)
		},
		"log sink": func(ln net.Listener) error {
			s, err := NewLogSink(LogSinkConfig{Handler: slog.DiscardHandler})
			if err != nil {
				t.Fatal(err)
			}
			return s.Serve(context.Background(), ln)
		},
	}
	for name, serve := range servers {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := net.Pipe()
				defer b.Close()
				permanent := errors.New("listener broken")
				script := []any{}
				for range 10 {
					script = append(script, emfile())
				}
				script = append(script, a, emfile(), permanent)
				ln := newScriptedListener(script...)
				start := time.Now()
				err := serve(ln)
				if !errors.Is(err, permanent) {
					t.Fatalf("Serve = %v, want the permanent error", err)
				}
				var got []time.Duration
				ts := ln.times()
				for i := 1; i < len(ts); i++ {
					got = append(got, ts[i].Sub(ts[i-1]))
				}
				ms := time.Millisecond
				want := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second, 0, 5 * ms}
				if len(got) != len(want) {
					t.Fatalf("accept intervals %v, want %v", got, want)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("accept intervals %v, want %v (from %v)", got, want, start)
					}
				}
			})
		})
	}
}

// TestLogSinkMaxConns: a connection beyond MaxConns is closed at once and
// the slot frees when a served connection ends.
func TestLogSinkMaxConns(t *testing.T) {
	h := newCapture()
	s, addr := startSink(t, LogSinkConfig{Handler: h, MaxConns: 1, RefuseAtCap: true}) // the old policy
	c1 := dialTCP(t, addr[len("tcp://"):])
	sendLog(t, c1, protocol.MethodLog, protocol.LogRecord{Message: "one"})
	h.waitFor(t, 1)
	c2 := dialTCP(t, addr[len("tcp://"):])
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second connection read %d, %v; want it closed", n, err)
	}
	c1.Close()
	// Once the first connection is gone, a new one is served.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c3 := dialTCP(t, addr[len("tcp://"):])
		sendLog(t, c3, protocol.MethodLog, protocol.LogRecord{Message: "three"})
		c3.CloseWrite()
		// A served connection is read to its end and closed by the sink
		// only after the record; a rejected one is closed unread.
		io.Copy(io.Discard, c3)
		if recs := h.records(); len(recs) >= 2 && recs[len(recs)-1].Message == "three" {
			if st := s.Stats(); st.Conns < 2 {
				t.Fatalf("stats %+v", st)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no connection served after the first one ended")
}

// A log stream whose enclave vanished without a reset must not lock a
// restarted enclave out: at the cap, the oldest connection is closed and the
// enclave's next attempt is served.
func TestLogSinkEvictsOldestAtCap(t *testing.T) {
	h := newCapture()
	s, addr := startSink(t, LogSinkConfig{Handler: h, MaxConns: 1, RefuseAtCap: true}) // the old policy
	stale := dialTCP(t, addr[len("tcp://"):])
	sendLog(t, stale, protocol.MethodLog, protocol.LogRecord{Message: "before the restart"})
	h.waitFor(t, 1)

	// The restarted enclave's first attempt is refused, and the stale
	// connection is closed by the sink.
	first := dialTCP(t, addr[len("tcp://"):])
	io.Copy(io.Discard, first)
	stale.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := stale.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stale connection read %d, %v; want it closed by the sink", n, err)
	}
	// Its next attempt is served (the slot frees once the stale
	// connection's goroutine has ended).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c := dialTCP(t, addr[len("tcp://"):])
		sendLog(t, c, protocol.MethodLog, protocol.LogRecord{Message: "after the restart"})
		c.CloseWrite()
		io.Copy(io.Discard, c)
		if recs := h.records(); recs[len(recs)-1].Message == "after the restart" {
			if st := s.Stats(); st.Evicted < 1 {
				t.Fatalf("stats %+v: no eviction counted", st)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the restarted enclave was never served")
}
