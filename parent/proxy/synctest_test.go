package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
)

// These tests run in synctest bubbles: time is fake, conns are net.Pipe,
// and the proxy's listener and dialer are in-memory.

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

type memListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newMemListener() *memListener {
	return &memListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

func (l *memListener) dial() net.Conn {
	a, b := net.Pipe()
	select {
	case l.ch <- b:
	case <-l.done:
		b.Close()
	}
	return a
}

// memDialer connects every dial to a new echo goroutine.
type memDialer struct{ wg sync.WaitGroup }

func (d *memDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	a, b := net.Pipe()
	d.wg.Go(func() {
		defer b.Close()
		io.Copy(b, b)
	})
	return a, nil
}

// memProxy runs a proxy with one route on an in-memory listener.
func memProxy(t *testing.T, r Route, limits Limits) (*Proxy, *memListener, context.CancelFunc, chan error) {
	ln := newMemListener()
	p, cancel, done := serveMem(t, Config{Routes: []Route{r}, Limits: limits}, Options{}, ln)
	return p, ln, cancel, done
}

// serveMem runs a proxy for cfg on ln (inside a bubble). An empty
// allowlist becomes 93.184.216.34:443, a nil Logger discards, and a nil
// Dialer is a memDialer whose echoes done also waits for.
func serveMem(t *testing.T, cfg Config, opts Options, ln net.Listener) (*Proxy, context.CancelFunc, chan error) {
	t.Helper()
	if cfg.Allowlist == nil {
		cfg.Allowlist = []AllowEntry{{Address: "93.184.216.34", Port: 443}}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	wait := func() {}
	if opts.Dialer == nil {
		d := &memDialer{}
		opts.Dialer, wait = d, d.wg.Wait
	}
	opts.Listen = func(context.Context, string) (net.Listener, error) { return ln, nil }
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(ctx)
		wait()
	}()
	return p, cancel, done
}

// The relay's idle timeout (TestIdleTimeout) is tested in transport,
// whose Relay the proxy uses.

func TestConnCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, ln, cancel, done := memProxy(t, Route{Name: "kms", Listen: "tcp://127.0.0.1:0", To: "93.184.216.34:443"}, Limits{MaxConns: 2})
		ping := func(c net.Conn) error {
			if _, err := c.Write([]byte("hi")); err != nil {
				return err
			}
			_, err := io.ReadFull(c, make([]byte, 2))
			return err
		}
		a, b := ln.dial(), ln.dial()
		if err := ping(a); err != nil {
			t.Fatal(err)
		}
		if err := ping(b); err != nil {
			t.Fatal(err)
		}
		c := ln.dial()
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("third conn: %v, want EOF (refused at once)", err)
		}
		c.Close()
		synctest.Wait()
		if got := metricValue(p.m.refused.WithLabelValues("kms", ReasonMaxConns)); got != 1 {
			t.Errorf("refused{max_conns} = %v", got)
		}
		a.Close()
		synctest.Wait()
		d := ln.dial()
		if err := ping(d); err != nil {
			t.Errorf("after a close, a new conn fails: %v", err)
		}
		b.Close()
		d.Close()
		cancel()
		<-done
	})
}

func TestHandshakeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, ln, cancel, done := memProxy(t, Route{Name: "c", Listen: "tcp://127.0.0.1:0", Connect: true}, Limits{HandshakeTimeout: 10 * time.Second})
		c := ln.dial()
		start := time.Now()
		c.Write([]byte("CONNECT 93.184.216.34:443 HTTP/1.1\r\n")) // never finished
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) != 10*time.Second {
			t.Errorf("got %d after %v, want 408 after 10s", resp.StatusCode, time.Since(start))
		}
		c.Close()
		synctest.Wait()
		if got := metricValue(p.m.refused.WithLabelValues("c", ReasonTimeout)); got != 1 {
			t.Errorf("refused{handshake_timeout} = %v", got)
		}
		cancel()
		<-done
	})
}

func TestDrain(t *testing.T) {
	for _, tt := range []struct {
		name      string
		closeAt   time.Duration // client closes its conn then; 0 never
		wantAfter time.Duration // Serve returns after cancel
	}{
		{"conn finishes", 5 * time.Second, 5 * time.Second},
		{"drain timeout", 0, 30 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, ln, cancel, done := memProxy(t, Route{Listen: "tcp://127.0.0.1:0", To: "93.184.216.34:443"}, Limits{DrainTimeout: 30 * time.Second})
				c := ln.dial()
				c.Write([]byte("x"))
				c.Read(make([]byte, 1))
				start := time.Now()
				cancel()
				if tt.closeAt > 0 {
					time.Sleep(tt.closeAt)
					// Still open during the drain.
					if _, err := c.Write([]byte("y")); err != nil {
						t.Errorf("write during drain: %v", err)
					}
					c.Read(make([]byte, 1))
					c.Close()
				}
				<-done
				if got := time.Since(start); got != tt.wantAfter {
					t.Errorf("Serve returned %v after cancel, want %v", got, tt.wantAfter)
				}
				c.Close()
			})
		})
	}
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, ln, cancel, done := memProxy(t, Route{Listen: "tcp://127.0.0.1:0", To: "93.184.216.34:443"}, Limits{DrainTimeout: time.Hour})
		defer cancel()
		c := ln.dial()
		c.Write([]byte("x"))
		c.Read(make([]byte, 1))
		p.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("conn after Close: %v, want EOF", err)
		}
		c.Close()
	})
}

// stuckDialer connects every dial to a peer that never reads.
type stuckDialer struct {
	mu    sync.Mutex
	peers []net.Conn
}

func (d *stuckDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	a, b := net.Pipe()
	d.mu.Lock()
	d.peers = append(d.peers, b)
	d.mu.Unlock()
	return a, nil
}

func (d *stuckDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.peers {
		c.Close()
	}
}

// TestEarlyDataStuckDestination: bytes sent right after a CONNECT request
// are written to the destination before relay's idle watchdog runs; a
// destination that never reads must not hold the connection forever.
func TestEarlyDataStuckDestination(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = time.Minute
		ln := newMemListener()
		d := &stuckDialer{}
		defer d.close()
		p, cancel, done := serveMem(t, Config{
			Routes: []Route{{Name: "c", Listen: "tcp://127.0.0.1:0", Connect: true}},
			Limits: Limits{IdleTimeout: idle},
		}, Options{Dialer: d}, ln)

		c := ln.dial()
		c.Write([]byte("CONNECT 93.184.216.34:443 HTTP/1.1\r\n\r\n\x16\x03\x01early"))
		start := time.Now()
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("read: %v, want EOF", err)
		}
		if got := time.Since(start); got != idle {
			t.Errorf("closed after %v, want %v", got, idle)
		}
		c.Close()
		synctest.Wait()
		if n := p.open.Load(); n != 0 {
			t.Errorf("%d connections still open", n)
		}
		cancel()
		<-done
	})
}

// TestConnectOutlivesHandshakeTimeout: the handshake deadline is lifted
// once the CONNECT request is read, so a tunnel lives past it (on the
// buffered copy path, which sets no read deadlines of its own).
func TestConnectOutlivesHandshakeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, ln, cancel, done := memProxy(t, Route{Name: "c", Listen: "tcp://127.0.0.1:0", Connect: true},
			Limits{HandshakeTimeout: 10 * time.Second, IdleTimeout: time.Hour})
		c := ln.dial()
		c.Write([]byte("CONNECT 93.184.216.34:443 HTTP/1.1\r\n\r\n"))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		time.Sleep(time.Minute)
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			t.Errorf("after a minute: %q %v", buf, err)
		}
		c.Close()
		cancel()
		<-done
	})
}

// TestMetricsServerLimits: on the /metrics server, a silent connection is
// closed at MetricsReadHeaderTimeout, a connection over MetricsMaxConns is
// closed at once, and a scrape still works while the cap is held.
func TestMetricsServerLimits(t *testing.T) {
	tests := []struct {
		name string
		max  int
	}{
		{"cap 1", 1},
		{"cap 3", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ln := newMemListener()
				mux := http.NewServeMux()
				mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
				srv := newMetricsServer(mux, nil)
				if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 {
					t.Fatalf("metrics server lacks a timeout: %+v", srv)
				}
				served := make(chan struct{})
				go func() {
					defer close(served)
					srv.Serve(newCapListener(ln, tt.max))
				}()
				// On a failure too: a server left running would end the
				// bubble in a deadlock panic that hides the failure.
				defer func() { srv.Close(); <-served }()
				var silent []net.Conn
				for range tt.max {
					silent = append(silent, ln.dial())
				}
				over := ln.dial()
				synctest.Wait()
				over.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("connection over the cap: read = %v, want closed", err)
				}
				over.Close()
				start := time.Now()
				for _, c := range silent {
					if _, err := c.Read(make([]byte, 1)); err == nil {
						t.Error("silent connection got data")
					}
					c.Close()
				}
				if d := time.Since(start); d > MetricsReadHeaderTimeout+time.Second {
					t.Errorf("silent connections closed after %v, want ~%v", d, MetricsReadHeaderTimeout)
				}
				// Slots are free again: a scrape works.
				c := ln.dial()
				go io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				if string(body) != "ok\n" {
					t.Errorf("scrape body %q", body)
				}
				c.Close()
			})
		})
	}
}

// logLines returns the JSON log records in buf whose msg is msg.
func logLines(t *testing.T, buf *syncbuf.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestRefusalLogRateLimited: a flood of refused connections is counted in
// full but logged once per 10 s, the next line saying how many were left
// out; a refusal for another reason still gets its own line at once.
func TestRefusalLogRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncbuf.Buffer
		ln := newMemListener()
		p, cancel, done := serveMem(t, Config{
			Routes: []Route{{Name: "c", Listen: "tcp://127.0.0.1:0", Connect: true}},
			Limits: Limits{MaxConns: 2},
		}, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, ln)

		// A refusal for one reason, then two connections hold both
		// slots (their CONNECT is never sent in full), then a flood.
		c := ln.dial()
		io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		io.Copy(io.Discard, c) // 405, then EOF
		c.Close()
		holdSlots := func() []net.Conn {
			var held []net.Conn
			for range 2 {
				h := ln.dial()
				h.Write([]byte("CONNECT "))
				go io.Copy(io.Discard, h)
				held = append(held, h)
			}
			return held
		}
		refuse := func() {
			c := ln.dial()
			io.Copy(io.Discard, c) // 503, then EOF
			c.Close()
		}
		held := holdSlots()
		for range 50 {
			refuse()
		}
		synctest.Wait()
		if got := metricValue(p.m.refused.WithLabelValues("c", ReasonMaxConns)); got != 50 {
			t.Errorf("refused{max_conns} = %v, want 50", got)
		}
		if n := len(logLines(t, &logs, "proxy: connection refused")); n != 2 {
			t.Fatalf("%d refusal lines, want 2 (method, then max_conns once)", n)
		}
		time.Sleep(10 * time.Second) // both handshakes time out: slots free
		synctest.Wait()
		held = append(held, holdSlots()...)
		refuse()
		synctest.Wait()
		var lines []string
		for _, l := range logLines(t, &logs, "proxy: connection refused") {
			lines = append(lines, fmt.Sprintf("%v suppressed=%v", l["reason"], l["suppressed"]))
		}
		want := []string{"method suppressed=<nil>", "max_conns suppressed=<nil>", "handshake_timeout suppressed=<nil>", "max_conns suppressed=49"}
		if !slices.Equal(lines, want) {
			t.Errorf("refusal lines:\n got %v\nwant %v", lines, want)
		}
		for _, h := range held {
			h.Close()
		}
		cancel()
		<-done
	})
}

// scriptListener returns the errors of its script from Accept first, then
// behaves as its memListener.
type scriptListener struct {
	*memListener
	mu     sync.Mutex
	script []error
}

func (l *scriptListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.script) > 0 {
		err := l.script[0]
		l.script = l.script[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.memListener.Accept()
}

// TestAcceptErrors: transient accept errors are retried and counted; a
// permanent one ends the route, logged, while the proxy goes on.
func TestAcceptErrors(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	aborted := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}
	ebadf := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EBADF)}
	tests := []struct {
		name       string
		script     []error
		wantServed bool // a connection after the script is served
		wantErrors float64
		wantRetry  int // retry lines logged
		wantFailed int // route failure lines logged
	}{
		{"transient errors", []error{emfile, aborted, emfile}, true, 3, 1, 0},
		{"permanent error", []error{emfile, ebadf}, false, 2, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs syncbuf.Buffer
				ln := &scriptListener{memListener: newMemListener(), script: tt.script}
				p, cancel, done := serveMem(t, Config{
					Routes: []Route{{Name: "kms", Listen: "tcp://127.0.0.1:0", To: "93.184.216.34:443"}},
				}, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, ln)
				synctest.Wait()
				time.Sleep(time.Minute) // every retry has run
				c := ln.dial()
				c.Write([]byte("hi"))
				_, err := io.ReadFull(c, make([]byte, 2))
				c.Close()
				if served := err == nil; served != tt.wantServed {
					t.Errorf("connection after the errors: %v; want served: %v", err, tt.wantServed)
				}
				if got := metricValue(p.m.errors.WithLabelValues("kms", "accept")); got != tt.wantErrors {
					t.Errorf("errors{accept} = %v, want %v", got, tt.wantErrors)
				}
				retries := logLines(t, &logs, "proxy: accept failed; retrying")
				failed := logLines(t, &logs, "proxy: the route's listener failed; it accepts no more connections until the proxy is restarted")
				if len(retries) != tt.wantRetry || len(failed) != tt.wantFailed {
					t.Errorf("%d retry lines and %d failure lines, want %d and %d", len(retries), len(failed), tt.wantRetry, tt.wantFailed)
				}
				for _, l := range append(retries, failed...) {
					if l["route"] != "kms" || l["err"] == nil {
						t.Errorf("log line %v lacks the route or the error", l)
					}
				}
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
		})
	}
}
