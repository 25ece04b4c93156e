package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// scriptListener answers Accept from a script: a nil entry is a
// connection, any other an error. Once the script is spent, Accept waits
// for Close. It records when each Accept was called.
type scriptListener struct {
	mu     sync.Mutex
	script []error
	calls  []time.Time
	closed chan struct{}
	once   sync.Once
	conns  []net.Conn
}

func newScript(script ...error) *scriptListener {
	return &scriptListener{script: script, closed: make(chan struct{})}
}

func (l *scriptListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	if len(l.script) == 0 {
		l.mu.Unlock()
		<-l.closed
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
	err := l.script[0]
	l.script = l.script[1:]
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	l.mu.Lock()
	l.conns = append(l.conns, b)
	l.mu.Unlock()
	return a, nil
}

func (l *scriptListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	return nil
}

func (l *scriptListener) Addr() net.Addr { return &net.TCPAddr{} }

// pauses returns the time between consecutive Accept calls.
func (l *scriptListener) pauses() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d []time.Duration
	for i := 1; i < len(l.calls); i++ {
		d = append(d, l.calls[i].Sub(l.calls[i-1]))
	}
	return d
}

// records keeps the log records written to it.
type records struct {
	mu sync.Mutex
	rs []slog.Record
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rs = append(h.rs, r.Clone())
	return nil
}
func (h *records) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *records) WithGroup(string) slog.Handler      { return h }

func (h *records) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.rs)
}

// attr returns a record's attribute key, or nil.
func attr(r slog.Record, key string) any {
	var v any
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.Any()
			return false
		}
		return true
	})
	return v
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTransientAcceptError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{acceptErr(syscall.EMFILE), true},
		{acceptErr(syscall.ENFILE), true},
		{acceptErr(syscall.ENOBUFS), true},
		{acceptErr(syscall.ENOMEM), true},
		{acceptErr(syscall.ECONNABORTED), true},
		{acceptErr(syscall.ECONNRESET), true},
		{acceptErr(syscall.EINTR), true},
		{acceptErr(syscall.EAGAIN), true},
		{acceptErr(syscall.ETIMEDOUT), true},
		{acceptErr(syscall.EPROTO), true},
		{acceptErr(syscall.ENETUNREACH), true},
		{fmt.Errorf("wrapped: %w", syscall.EMFILE), true},
		{&net.OpError{Op: "accept", Err: timeoutErr{}}, true},
		{&net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}, true},
		{acceptErr(syscall.EBADF), false},
		{acceptErr(syscall.EINVAL), false},
		{acceptErr(syscall.ENOTSOCK), false},
		{&net.OpError{Op: "accept", Err: net.ErrClosed}, false},
		{os.ErrClosed, false},
		{errors.New("something else"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := TransientAcceptError(tt.err); got != tt.want {
			t.Errorf("TransientAcceptError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestAcceptorPolicy: what Accept does with each script of listener
// answers: a connection, after how many calls, or which error.
func TestAcceptorPolicy(t *testing.T) {
	tests := []struct {
		name        string
		script      []error
		wantConn    bool
		wantStopped bool
		wantErr     error // matched with errors.Is when not stopped
		wantCalls   int
		wantOnError int
		wantLogs    int
	}{
		{name: "connection", script: []error{nil}, wantConn: true, wantCalls: 1},
		{name: "out of descriptors, then a connection", script: []error{acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE), nil},
			wantConn: true, wantCalls: 3, wantOnError: 2, wantLogs: 1},
		{name: "aborted handshake, then a connection", script: []error{acceptErr(syscall.ECONNABORTED), nil},
			wantConn: true, wantCalls: 2, wantOnError: 1, wantLogs: 1},
		{name: "timeout, then a connection", script: []error{&net.OpError{Op: "accept", Err: timeoutErr{}}, nil},
			wantConn: true, wantCalls: 2, wantOnError: 1, wantLogs: 1},
		{name: "broken listener", script: []error{acceptErr(syscall.EMFILE), acceptErr(syscall.EBADF), nil},
			wantErr: syscall.EBADF, wantCalls: 2, wantOnError: 2, wantLogs: 1},
		{name: "unknown error", script: []error{errors.New("broken")},
			wantErr: errors.New(""), wantCalls: 1, wantOnError: 1},
		{name: "closed", script: []error{&net.OpError{Op: "accept", Err: net.ErrClosed}},
			wantStopped: true, wantErr: net.ErrClosed, wantCalls: 1},
		{name: "closed file", script: []error{os.ErrClosed},
			wantStopped: true, wantErr: os.ErrClosed, wantCalls: 1},
		{name: "out of descriptors, then closed", script: []error{acceptErr(syscall.EMFILE), &net.OpError{Op: "accept", Err: net.ErrClosed}},
			wantStopped: true, wantErr: net.ErrClosed, wantCalls: 2, wantOnError: 1, wantLogs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ln := newScript(tt.script...)
				defer ln.Close()
				logs := &records{}
				onError := 0
				a := &Acceptor{Listener: ln, Name: "test server", Logger: slog.New(logs), OnError: func(error) { onError++ }}
				c, err := a.Accept(context.Background())
				if c != nil {
					c.Close()
				}
				switch {
				case tt.wantConn:
					if c == nil || err != nil {
						t.Fatalf("Accept = %v, %v; want a connection", c, err)
					}
				case tt.wantStopped:
					if !errors.Is(err, ErrStopped) || !errors.Is(err, tt.wantErr) {
						t.Fatalf("Accept: %v; want ErrStopped and %v", err, tt.wantErr)
					}
				default:
					if err == nil || errors.Is(err, ErrStopped) {
						t.Fatalf("Accept: %v; want a permanent error", err)
					}
					if tt.wantErr.Error() != "" && !errors.Is(err, tt.wantErr) {
						t.Fatalf("Accept: %v; want %v", err, tt.wantErr)
					}
				}
				if got := len(ln.calls); got != tt.wantCalls {
					t.Errorf("%d Accept calls, want %d", got, tt.wantCalls)
				}
				if onError != tt.wantOnError {
					t.Errorf("OnError called %d times, want %d", onError, tt.wantOnError)
				}
				rs := logs.all()
				if len(rs) != tt.wantLogs {
					t.Fatalf("%d log lines, want %d", len(rs), tt.wantLogs)
				}
				for _, r := range rs {
					if r.Level != slog.LevelWarn || r.Message != "test server: accept failed; retrying" || attr(r, "err") == nil || attr(r, "backoff") == nil {
						t.Errorf("log line %v %q, want a warning naming the server, the error and the backoff", r.Level, r.Message)
					}
				}
			})
		})
	}
}

// TestAcceptorBackoff: the pauses double from 5 ms to 1 s, start again at
// 5 ms after a connection, and the retries are logged at most once per
// 10 s, with the count of lines held back.
func TestAcceptorBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var script []error
		for range 25 {
			script = append(script, acceptErr(syscall.EMFILE))
		}
		script = append(script, nil, acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), nil)
		ln := newScript(script...)
		defer ln.Close()
		logs := &records{}
		a := &Acceptor{Listener: ln, Name: "s", Logger: slog.New(logs)}
		for range 2 {
			c, err := a.Accept(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		ms := time.Millisecond
		want := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms}
		for len(want) < 25 {
			want = append(want, time.Second)
		}
		want = append(want, 0, 5*ms, 10*ms) // a connection at once, then from 5 ms again
		if got := ln.pauses(); !slices.Equal(got, want) {
			t.Errorf("pauses between Accept calls:\n got %v\nwant %v", got, want)
		}
		// Failed calls at 0, 5, 15, …, 1275 ms, then every second from
		// 2275 ms: lines at 0 and at the first failure ≥ 10 s (the 18th,
		// at 10.275 s, after 16 held back); the second Accept's failures,
		// at 18.275 s, are within 10 s of that line.
		rs := logs.all()
		var got []string
		for _, r := range rs {
			got = append(got, fmt.Sprintf("%v suppressed=%v", r.Time.Sub(ln.calls[0]), attr(r, "suppressed")))
		}
		wantLogs := []string{"0s suppressed=<nil>", "10.275s suppressed=16"}
		if !slices.Equal(got, wantLogs) {
			t.Errorf("log lines:\n got %v\nwant %v", got, wantLogs)
		}
	})
}

// TestAcceptorContextEnds: a context that ends during a pause stops
// Accept at once, cleanly.
func TestAcceptorContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newScript(acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE))
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(7*time.Millisecond, cancel)
		start := time.Now()
		_, err := (&Acceptor{Listener: ln}).Accept(ctx)
		if !errors.Is(err, ErrStopped) || !errors.Is(err, context.Canceled) {
			t.Errorf("Accept: %v, want ErrStopped and context.Canceled", err)
		}
		if d := time.Since(start); d != 7*time.Millisecond {
			t.Errorf("returned after %v, want 7ms", d)
		}
	})
}

// TestLogLimiter: the first line passes at once, then one per Every, each
// with the count of lines held back before it.
func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tests := []struct {
			every time.Duration
			at    []time.Duration // when lines are offered, from the start
			want  []string        // "offset suppressed" of the lines that pass
		}{
			{0, []time.Duration{0, time.Second, 9 * time.Second, 10 * time.Second, 11 * time.Second, 30 * time.Second},
				[]string{"0s 0", "10s 2", "30s 1"}},
			{time.Second, []time.Duration{0, 0, 0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 3 * time.Second},
				[]string{"0s 0", "1s 3", "3s 1"}},
		}
		for _, tt := range tests {
			l := &LogLimiter{Every: tt.every}
			start := time.Now()
			var got []string
			for _, at := range tt.at {
				time.Sleep(time.Until(start.Add(at)))
				if ok, n := l.Allow(); ok {
					got = append(got, fmt.Sprintf("%v %d", time.Since(start), n))
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Every %v: lines %v, want %v", tt.every, got, tt.want)
			}
		}
	})
}

// TestLogLimiterLog: Log writes the passing lines with the suppressed
// count, and a nil logger writes nothing but still counts.
func TestLogLimiterLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &records{}
		log := slog.New(logs)
		var l LogLimiter
		ctx := context.Background()
		args := make([]any, 2, 8) // spare capacity: Log must not write into it
		args[0], args[1] = "k", "v"
		if !l.Log(ctx, log, slog.LevelWarn, "refused", args...) || l.Log(ctx, nil, slog.LevelWarn, "refused", args...) {
			t.Fatal("first line held back, or the second passed")
		}
		time.Sleep(DefaultLogEvery)
		if !l.Log(ctx, log, slog.LevelWarn, "refused", args...) {
			t.Fatal("line after the interval held back")
		}
		rs := logs.all()
		if len(rs) != 2 || attr(rs[0], "suppressed") != nil || attr(rs[1], "suppressed") != uint64(1) || attr(rs[1], "k") != "v" {
			t.Errorf("records %v", rs)
		}
		if extra := args[:4]; extra[2] != nil {
			t.Errorf("Log wrote into the caller's arguments: %v", extra)
		}
	})
}

// TestLogLimiterConcurrent (from parent/internal/loglimit): the first
// line passes, then one per DefaultLogEvery, however many goroutines ask
// at once.
func TestLogLimiterConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l LogLimiter
		steps := []struct {
			after time.Duration // since the previous step
			want  int64         // lines let through among 8 goroutines
		}{
			{0, 1},
			{time.Second, 0},
			{DefaultLogEvery - time.Second - 1, 0},
			{1, 1},
			{DefaultLogEvery / 2, 0},
			{2 * DefaultLogEvery, 1},
		}
		for i, st := range steps {
			time.Sleep(st.after)
			var passed atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					if ok, _ := l.Allow(); ok {
						passed.Add(1)
					}
				})
			}
			wg.Wait()
			if got := passed.Load(); got != st.want {
				t.Fatalf("step %d: %d lines let through, want %d", i, got, st.want)
			}
		}
	})
}
