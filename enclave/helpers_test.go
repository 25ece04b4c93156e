package enclave

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// nitroFS fakes the sysfs files of a Nitro Enclave.
func nitroFS() fstest.MapFS {
	return fstest.MapFS{
		"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
		"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
	}
}

// checkLeaks fails the test if goroutines remain when it (and every cleanup
// registered after this call) has finished.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func echo(_ context.Context, body []byte) ([]byte, error) { return body, nil }

// testNSM is an emulated NSM, shared by the tests, that looks like a
// production enclave's: non-zero PCR0..2 and the system's time.
var testNSM = sync.OnceValue(func() attest.Attester {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		panic(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		panic(err)
	}
	return n
})

// testConfig is a config for loopback tests with short timeouts, whose
// startup checks all pass.
func testConfig() Config {
	return Config{
		Addr:             "tcp://127.0.0.1:0",
		SysFS:            nitroFS(),
		Attester:         testNSM(),
		Logger:           discardLogger(),
		ReadFrameTimeout: 5 * time.Second,
		IdleTimeout:      10 * time.Second,
		WriteTimeout:     5 * time.Second,
		HandlerTimeout:   5 * time.Second,
		DrainTimeout:     5 * time.Second,
	}
}

// startServer runs a server on loopback TCP; it is shut down at cleanup.
func startServer(t testing.TB, cfg Config, setup func(*Server)) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", echo)
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, transport.AddrOf(s.Addr())
}

// client is a minimal protocol client for tests.
type client struct {
	t  testing.TB
	nc net.Conn
	fr *protocol.FrameReader
	fw *protocol.FrameWriter
}

func newClient(t testing.TB, nc net.Conn) *client {
	fr, _ := protocol.NewFrameReader(nc, protocol.MaxFrameSizeLimit)
	fw, _ := protocol.NewFrameWriter(nc, protocol.MaxFrameSizeLimit)
	return &client{t: t, nc: nc, fr: fr, fw: fw}
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := transport.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return newClient(t, nc)
}

func (c *client) send(e protocol.Envelope) error {
	b, err := protocol.MarshalEnvelope(&e)
	if err != nil {
		return err
	}
	return c.fw.WriteFrame(b)
}

func (c *client) recv() (protocol.Envelope, error) {
	p, err := c.fr.ReadFrame()
	if err != nil {
		return protocol.Envelope{}, err
	}
	return protocol.UnmarshalEnvelope(p)
}

// call sends one request and returns its response; failures are fatal.
func (c *client) call(method string, id uint64, body []byte) protocol.Envelope {
	c.t.Helper()
	if err := c.send(protocol.Envelope{ID: id, Method: method, Body: body}); err != nil {
		c.t.Fatalf("send %s: %v", method, err)
	}
	e, err := c.recv()
	if err != nil {
		c.t.Fatalf("recv %s: %v", method, err)
	}
	if e.ID != id {
		c.t.Fatalf("response id %d, want %d", e.ID, id)
	}
	return e
}

// expectClosed waits (up to d) for the server to close c's connection.
func (c *client) expectClosed(d time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var buf [512]byte
	for {
		_, err := c.nc.Read(buf[:])
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
			return
		}
		c.t.Fatalf("connection not closed by the server: %v", err)
	}
}

// waitFor polls cond (real time) until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pipeListener is an in-memory net.Listener of net.Pipe connections, for
// synctest bubbles (which cannot do real network I/O). wrap, if set,
// wraps the server side of each connection (fault injection).
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	wrap func(net.Conn) net.Conn
}

func newPipeListener(wrap func(net.Conn) net.Conn) *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{}), wrap: wrap}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// Dial returns the client side of a new connection.
func (l *pipeListener) Dial() (net.Conn, error) {
	s, c := net.Pipe()
	var sc net.Conn = s
	if l.wrap != nil {
		sc = l.wrap(s)
	}
	select {
	case l.ch <- sc:
		return c, nil
	case <-l.done:
		s.Close()
		c.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// serveOn runs s on ln in the background; the returned stop cancels it and
// returns Serve's result.
func serveOn(s *Server, ln net.Listener) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	return func() error {
		cancel()
		return <-done
	}
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
