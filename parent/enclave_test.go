package parent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/testutil"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// realEnclave is an enclave.Server on loopback TCP.
type realEnclave struct {
	srv    *enclave.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func enclaveConfig(addr string) enclave.Config {
	return enclave.Config{
		Addr:           addr,
		Dev:            true,
		SysFS:          fstest.MapFS{},
		Logger:         quiet,
		HandlerTimeout: 20 * time.Second,
		DrainTimeout:   50 * time.Millisecond,
	}
}

// startEnclave starts a server on addr ("tcp://127.0.0.1:0" for a free
// port) with the test methods registered; it is stopped at cleanup.
func startEnclave(t testing.TB, cfg enclave.Config) *realEnclave {
	t.Helper()
	srv, err := enclave.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("echo", func(_ context.Context, b []byte) ([]byte, error) { return b, nil })
	srv.Handle("block", func(ctx context.Context, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	srv.Handle("fail", func(_ context.Context, b []byte) ([]byte, error) {
		switch string(b) {
		case "bad":
			return nil, fmt.Errorf("field x: %w", protocol.ErrBadRequest)
		case "auth":
			return nil, protocol.ErrUnauthenticated
		case "busy":
			return nil, protocol.ErrUnavailable
		case "panic":
			panic("handler panic")
		}
		return nil, errors.New("a secret detail that must not cross")
	})
	srv.Handle("add", func(_ context.Context, b []byte) ([]byte, error) {
		var req struct{ A, B int }
		if err := protocol.Unmarshal(b, &req); err != nil {
			return nil, fmt.Errorf("%w: %w", protocol.ErrBadRequest, err)
		}
		return protocol.Marshal(req.A + req.B)
	})
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	e := &realEnclave{srv: srv, addr: transport.AddrOf(srv.Addr()), cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(ctx) }()
	t.Cleanup(e.stop)
	return e
}

// stop shuts the server down (in-flight handlers get DrainTimeout) and
// waits for it.
func (e *realEnclave) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.cancel = nil
}

func TestEnclaveHealth(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{})
	var h protocol.HealthResponse
	if err := c.Call(context.Background(), protocol.MethodHealth, nil, &h); err != nil {
		t.Fatal(err)
	}
	if !h.Dev || h.Version == "" || h.OpenConns < 1 {
		t.Fatalf("health = %+v; want dev, a version and an open connection", h)
	}
	var sum int
	if err := c.Call(context.Background(), "add", struct{ A, B int }{2, 40}, &sum); err != nil || sum != 42 {
		t.Fatalf("add = %d, %v", sum, err)
	}
}

func TestEnclaveTypedErrors(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{})
	for _, tc := range []struct {
		method string
		body   string
		want   error
	}{
		{"no.such.method", "", protocol.ErrUnknownMethod},
		{"fail", "bad", protocol.ErrBadRequest},
		{"fail", "auth", protocol.ErrUnauthenticated},
		{"fail", "busy", protocol.ErrUnavailable},
		{"fail", "panic", protocol.ErrInternal},
		{"fail", "other", protocol.ErrInternal},
		{"add", "not cbor", protocol.ErrBadRequest},
	} {
		t.Run(tc.method+"/"+tc.body, func(t *testing.T) {
			_, err := c.CallRaw(context.Background(), tc.method, []byte(tc.body))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if bytes.Contains([]byte(err.Error()), []byte("secret")) {
				t.Fatalf("error detail crossed the boundary: %v", err)
			}
		})
	}
	// Remote errors leave the pool healthy.
	if got, err := c.CallRaw(context.Background(), "echo", []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

func TestEnclaveConcurrent(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 4})
	concurrentEcho(t, c, 64, 100)
	if st := e.srv.Stats(); st.TotalConns != 4 || st.Requests != 6400 {
		t.Fatalf("server stats %+v; want the 4 pooled connections and 6400 requests", st)
	}
}

// TestEnclaveCloseWhileCalling closes the client under load: every call
// returns, and no goroutine is left (TestMain checks).
func TestEnclaveCloseWhileCalling(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 4})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := c.CallRaw(context.Background(), "echo", []byte("x"))
				if errors.Is(err, ErrClientClosed) {
					return
				}
				if err != nil {
					t.Errorf("err = %v, want nil or ErrClientClosed", err)
					return
				}
			}
		}()
	}
	for e.srv.Stats().Requests < 200 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	wg.Wait()
}

func TestEnclaveCancellation(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 1})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"already canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			_, err := c.CallRaw(ctx, "block", nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("returned after %v", d)
			}
			// The abandoned request does not disturb the next calls.
			if got, err := c.CallRaw(context.Background(), "echo", []byte("x")); err != nil || string(got) != "x" {
				t.Fatalf("echo after cancel = %q, %v", got, err)
			}
		})
	}
}

// TestEnclaveRestartMidCall kills the server while calls are blocked in it:
// every call fails well within its deadline, then calls succeed against
// the restarted server at the same address.
func TestEnclaveRestartMidCall(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 8
	errc := make(chan error, n)
	for range n {
		go func() {
			_, err := c.CallRaw(ctx, "block", nil)
			errc <- err
		}()
	}
	// Wait until the handlers run.
	for e.srv.Stats().Requests < n {
		time.Sleep(time.Millisecond)
	}
	e.stop()
	for range n {
		err := <-errc
		// The server either answered during its drain or dropped the
		// connection; either way the call ended with an error, not a hang.
		if err == nil || ctx.Err() != nil {
			t.Fatalf("in-flight call: err = %v, ctx = %v", err, ctx.Err())
		}
		var re *protocol.RemoteError
		if !errors.Is(err, ErrConnLost) && !errors.As(err, &re) {
			t.Fatalf("in-flight call: err = %v, want ErrConnLost or a remote error", err)
		}
	}
	// While the server is down, calls fail fast.
	if _, err := c.CallRaw(ctx, "echo", nil); err == nil {
		t.Fatal("call with the server down succeeded")
	}
	e2 := startEnclave(t, enclaveConfig(e.addr))
	_ = e2
	for i := range 10 {
		want := []byte{byte(i)}
		if got, err := c.CallRaw(ctx, "echo", want); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("call %d after restart = %v, %v", i, got, err)
		}
	}
}

// newAttestEnclave serves enclavekit.attest from an NSM emulator.
func newAttestEnclave(t testing.TB, pcrs map[int][]byte) (*realEnclave, *nsmtest.Emulator) {
	t.Helper()
	emu, err := nsmtest.New(nsmtest.Options{PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsm.Close() })
	cfg := enclaveConfig("tcp://127.0.0.1:0")
	cfg.Attester = nsm
	return startEnclave(t, cfg), emu
}

func pcr(b byte) []byte { return bytes.Repeat([]byte{b}, 48) }

// A debug-mode enclave (all-zero PCR0) is refused even with AnyImage,
// unless the caller accepts debug enclaves explicitly.
func TestEnclaveAttestDebugMode(t *testing.T) {
	e, emu := newAttestEnclave(t, nil) // the emulator's PCRs start at zero, as in debug mode
	c := dialT(t, e.addr, Options{})
	doc, err := c.Attest(context.Background(), AttestOptions{Roots: emu.Roots(), AnyImage: true})
	if doc != nil || !errors.Is(err, ErrDebugEnclave) || !errors.Is(err, ErrAttestation) {
		t.Fatalf("Attest = %v, %v; want ErrDebugEnclave", doc, err)
	}
	doc, err = c.Attest(context.Background(), AttestOptions{Roots: emu.Roots(), AnyImage: true, AllowDebug: true})
	if err != nil || !bytes.Equal(doc.PCRs[0], make([]byte, 48)) {
		t.Fatalf("with AllowDebug: %v, %v", doc, err)
	}
}

func TestEnclaveAttest(t *testing.T) {
	want := map[int][]byte{0: pcr(0xa0), 1: pcr(0xa1), 2: pcr(0xa2)}
	e, emu := newAttestEnclave(t, want)
	c := dialT(t, e.addr, Options{})
	other, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		opts    AttestOptions
		wantErr error // nil: verified
	}{
		{"ok", AttestOptions{Roots: emu.Roots(), PCRs: want}, nil},
		{"ok with user data", AttestOptions{Roots: emu.Roots(), PCRs: want, UserData: []byte("ud")}, nil},
		{"any pcrs", AttestOptions{Roots: emu.Roots(), AnyImage: true}, nil},
		{"wrong pcr", AttestOptions{Roots: emu.Roots(), PCRs: map[int][]byte{0: pcr(0xa0), 2: pcr(0xff)}}, attest.ErrPCRMismatch},
		{"aws root pinned", AttestOptions{PCRs: want}, ErrAttestation},
		{"other root", AttestOptions{Roots: other.Roots(), PCRs: want}, ErrAttestation},
		{"stale", AttestOptions{Roots: emu.Roots(), PCRs: want, MaxAge: time.Minute, Now: func() time.Time { return time.Now().Add(time.Hour) }}, attest.ErrStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := c.Attest(context.Background(), tc.opts)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(doc.Nonce) != NonceSize || !bytes.Equal(doc.UserData, tc.opts.UserData) || !bytes.Equal(doc.PublicKey, tc.opts.PublicKey) {
					t.Fatalf("doc = %+v", doc)
				}
				if !bytes.Equal(doc.PCRs[1], want[1]) {
					t.Fatalf("PCR1 = %x", doc.PCRs[1])
				}
				return
			}
			if doc != nil || !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrAttestation) {
				t.Fatalf("Attest = %v, %v; want no document and %v", doc, err, tc.wantErr)
			}
		})
	}
	if _, err := c.Attest(context.Background(), AttestOptions{Roots: emu.Roots()}); err == nil {
		t.Fatal("Attest without a PCR policy succeeded")
	}
}

// TestAttestHostileEnclave: an enclave that replays a document, or sends
// garbage, is refused.
func TestAttestHostileEnclave(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer nsm.Close()
	replayed, err := nsm.Attest(context.Background(), attest.Request{Nonce: []byte("an old nonce")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"replayed document", mustMarshal(t, protocol.AttestResponse{Document: replayed}), attest.ErrNonceMismatch},
		{"garbage document", mustMarshal(t, protocol.AttestResponse{Document: []byte("garbage")}), attest.ErrMalformed},
		{"garbage body", []byte{0xff}, ErrAttestation},
		{"empty body", nil, ErrAttestation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
				fc.send(protocol.Envelope{ID: env.ID, Body: tc.body})
			})
			c := dialT(t, s.Addr(), Options{})
			doc, err := c.Attest(context.Background(), AttestOptions{Roots: emu.Roots(), AnyImage: true})
			if doc != nil || !errors.Is(err, tc.want) || !errors.Is(err, ErrAttestation) {
				t.Fatalf("Attest = %v, %v; want %v", doc, err, tc.want)
			}
		})
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := protocol.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClientThroughIngress runs protocol traffic from the client library
// through the ingress to a real enclave server.
func TestClientThroughIngress(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	in, err := ingress.New(ingress.Config{Target: e.addr, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunServer(t, ln, in.Serve)
	c := dialT(t, "tcp://"+ln.Addr().String(), Options{PoolSize: 2})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				want := fmt.Appendf(nil, "%d.%d", g, i)
				if got, err := c.CallRaw(context.Background(), "echo", want); err != nil || !bytes.Equal(got, want) {
					t.Errorf("echo = %q, %v", got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := in.Stats(); st.TotalConns != 2 {
		t.Fatalf("ingress stats %+v, want the client's 2 connections", st)
	}
}

// TestEnclaveRestartUnderLoad restarts the server while goroutines call it
// in a loop: no call hangs past its deadline, and once the new server is up
// every goroutine's calls succeed again.
func TestEnclaveRestartUnderLoad(t *testing.T) {
	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 3})
	const workers = 8
	var (
		restarted atomic.Bool
		wg        sync.WaitGroup
		recovered atomic.Int32 // workers with a success after the restart
	)
	stopLoad := make(chan struct{})
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := false
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				after := restarted.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.CallRaw(ctx, "echo", []byte("x"))
				expired := ctx.Err() != nil
				cancel()
				if expired {
					t.Errorf("worker %d: call hung until its deadline: %v", g, err)
					return
				}
				if err == nil && after && !ok {
					ok = true
					recovered.Add(1)
				}
				if err != nil {
					time.Sleep(time.Millisecond) // the server is down: don't spin
				}
			}
		}()
	}
	for e.srv.Stats().Requests < 500 {
		time.Sleep(time.Millisecond)
	}
	e.stop()
	time.Sleep(20 * time.Millisecond) // calls fail while it is down
	startEnclave(t, enclaveConfig(e.addr))
	restarted.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for recovered.Load() < workers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stopLoad)
	wg.Wait()
	if n := recovered.Load(); n < workers {
		t.Fatalf("only %d of %d workers had a successful call within 20s of the restart", n, workers)
	}
}
