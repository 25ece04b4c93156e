package acceptloop_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/parent/internal/acceptloop"
	"github.com/enclavekit/enclavekit/parent/logsink"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// TestBackoffSynctest: temporary accept errors are retried with
// a doubling backoff (5 ms up to 1 s) that resets after a success, for the
// ingress and the log sink alike; a permanent error ends Serve with it.
// The loop's own subtest serves each connection by closing it.
func TestBackoffSynctest(t *testing.T) {
	servers := map[string]func(ln net.Listener) error{
		"loop": func(ln net.Listener) error {
			l := acceptloop.Loop{What: "test", Sem: make(chan struct{}, 1),
				Serve: func(_ context.Context, c net.Conn) { c.Close() }}
			return l.Run(context.Background(), ln)
		},
		"ingress": func(ln net.Listener) error {
			in, err := ingress.New(ingress.Config{Target: "tcp://127.0.0.1:1", Logger: slog.New(slog.DiscardHandler),
				Dial: func(context.Context, string) (net.Conn, error) { return nil, errors.New("down") }})
			if err != nil {
				t.Fatal(err)
			}
			return in.Serve(context.Background(), ln)
		},
		"log sink": func(ln net.Listener) error {
			s, err := logsink.New(logsink.Config{Handler: slog.DiscardHandler})
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

// warnings is a slog.Handler keeping the messages of the records it gets.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (h *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (h *warnings) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *warnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnings) WithGroup(string) slog.Handler      { return h }

// TestRetryLogSynctest: the ingress and the log sink log their accept
// retries through transport.Acceptor, rate-limited: ten retries within
// the first seconds give one line.
func TestRetryLogSynctest(t *testing.T) {
	servers := map[string]func(ln net.Listener, h slog.Handler) error{
		"ingress": func(ln net.Listener, h slog.Handler) error {
			in, err := ingress.New(ingress.Config{Target: "tcp://127.0.0.1:1", Logger: slog.New(h)})
			if err != nil {
				t.Fatal(err)
			}
			return in.Serve(context.Background(), ln)
		},
		"log sink": func(ln net.Listener, h slog.Handler) error {
			s, err := logsink.New(logsink.Config{Handler: h})
			if err != nil {
				t.Fatal(err)
			}
			return s.Serve(context.Background(), ln)
		},
	}
	for name, serve := range servers {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				script := []any{}
				for range 10 {
					script = append(script, emfile())
				}
				permanent := errors.New("listener broken")
				h := &warnings{}
				if err := serve(newScriptedListener(append(script, permanent)...), h); !errors.Is(err, permanent) {
					t.Fatalf("Serve = %v, want the permanent error", err)
				}
				want := "enclavekit " + name + ": accept failed; retrying"
				if len(h.msgs) != 1 || h.msgs[0] != want {
					t.Errorf("log lines %q, want one %q", h.msgs, want)
				}
			})
		})
	}
}
