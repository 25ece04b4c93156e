package enclave

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"zero value", Config{}, ""},
		{"tcp", Config{Addr: "tcp://127.0.0.1:0", MaxConns: 1, MaxInFlight: 1, MaxFrameSize: 1}, ""},
		{"bad addr", Config{Addr: "udp://1.2.3.4:5"}, "Addr"},
		{"negative conns", Config{MaxConns: -1}, "MaxConns is -1"},
		{"negative in-flight", Config{MaxInFlight: -2}, "MaxInFlight"},
		{"frame too big", Config{MaxFrameSize: protocol.MaxFrameSizeLimit + 1}, "MaxFrameSize"},
		{"negative frame", Config{MaxFrameSize: -1}, "MaxFrameSize"},
		{"negative idle", Config{IdleTimeout: -time.Second}, "IdleTimeout"},
		{"negative read header", Config{ReadFrameTimeout: -1}, "ReadFrameTimeout"},
		{"negative write", Config{WriteTimeout: -1}, "WriteTimeout"},
		{"negative handler", Config{HandlerTimeout: -1}, "HandlerTimeout"},
		{"negative drain", Config{DrainTimeout: -1}, "DrainTimeout"},
		{"negative in-flight bytes", Config{MaxInFlightBytes: -1}, "MaxInFlightBytes is -1"},
		{"in-flight bytes below the default frame", Config{MaxInFlightBytes: protocol.DefaultMaxFrameSize - 1}, "at least MaxFrameSize"},
		{"in-flight bytes below the frame", Config{MaxFrameSize: 4096, MaxInFlightBytes: 4095}, "at least MaxFrameSize"},
		{"in-flight bytes equal to the frame", Config{MaxFrameSize: 4096, MaxInFlightBytes: 4096}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v; want ErrConfig mentioning %q", err, tt.wantErr)
			}
		})
	}
	d := Config{}.withDefaults()
	if d.Addr != DefaultAddr || d.MaxFrameSize != protocol.DefaultMaxFrameSize || d.MaxConns != DefaultMaxConns || d.Logger == nil ||
		d.MaxInFlightBytes != DefaultMaxInFlightBytes || d.MaxInFlightBytes < protocol.MaxFrameSizeLimit {
		t.Fatalf("defaults not applied: %+v", d)
	}
}

func TestStartupChecks(t *testing.T) {
	const rng, clk = "sys/devices/virtual/misc/hw_random/rng_current", "sys/devices/system/clocksource/clocksource0/current_clocksource"
	with := func(rngVal, clkVal string) fstest.MapFS {
		fs := fstest.MapFS{}
		if rngVal != "" {
			fs[rng] = &fstest.MapFile{Data: []byte(rngVal)}
		}
		if clkVal != "" {
			fs[clk] = &fstest.MapFile{Data: []byte(clkVal)}
		}
		return fs
	}
	tests := []struct {
		name     string
		fs       fstest.MapFS
		dev      bool
		wantErr  []string // substrings of the error; nil means success
		wantWarn bool
	}{
		{"nitro", with("nsm-hwrng\n", "kvm-clock\n"), false, nil, false},
		{"virtio rng", with("virtio_rng.0\n", "kvm-clock\n"), false,
			[]string{"/sys/devices/virtual/misc/hw_random/rng_current", `"virtio_rng.0"`, `required "nsm-hwrng"`, "--dev"}, false},
		{"tsc clock", with("nsm-hwrng", "tsc"), false,
			[]string{"current_clocksource", `"tsc"`, `required "kvm-clock"`}, false},
		{"both wrong", with("none", "tsc"), false, []string{"rng_current", "current_clocksource"}, false},
		{"missing files fail closed", with("", ""), false, []string{"unreadable", "rng_current"}, false},
		{"prefix is not enough", with("nsm-hwrng-fake", "kvm-clock"), false, []string{"nsm-hwrng-fake"}, false},
		{"dev override", with("virtio_rng.0", "tsc"), true, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			res, err := RunChecks(tt.fs, StartupChecks(), tt.dev, newTextLogger(&logs))
			if tt.wantErr != nil {
				var ce *CheckError
				if !errors.As(err, &ce) || !errors.Is(err, ErrStartupCheck) {
					t.Fatalf("RunChecks = %v; want a *CheckError", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(StartupChecks()) {
				t.Fatalf("%d results, want %d", len(res), len(StartupChecks()))
			}
			for _, r := range res {
				if !r.OK && !r.Overridden {
					t.Errorf("check %s neither OK nor overridden", r.Name)
				}
				if tt.dev && !r.Overridden {
					t.Errorf("dev: check %s not marked overridden: %+v", r.Name, r)
				}
			}
			if got := strings.Contains(logs.String(), "DEVELOPMENT MODE"); got != tt.wantWarn {
				t.Errorf("warning logged = %v, want %v:\n%s", got, tt.wantWarn, logs.String())
			}
		})
	}
}

func TestNewRefusesToStart(t *testing.T) {
	cfg := testConfig()
	cfg.SysFS = fstest.MapFS{"sys/devices/virtual/misc/hw_random/rng_current": {Data: []byte("virtio_rng.0\n")}}
	if _, err := New(cfg); !errors.Is(err, ErrStartupCheck) {
		t.Fatalf("New = %v; want ErrStartupCheck", err)
	}
	cfg.Dev = true
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if h := s.Health(); !h.Dev || len(h.Checks) != 2 || !h.Checks[0].Overridden {
		t.Fatalf("dev health = %+v", h)
	}
	if _, err := New(Config{MaxConns: -1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("New with a bad config = %v", err)
	}
}

func TestHandleRegistration(t *testing.T) {
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		method string
		h      Handler
	}{
		{"empty", "", echo},
		{"long", strings.Repeat("m", protocol.MaxMethodLen+1), echo},
		{"nil", "x", nil},
		{"builtin", protocol.MethodHealth, echo},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Handle did not panic")
				}
			}()
			s.Handle(tt.method, tt.h)
		})
	}
}

func TestEchoAndPipelining(t *testing.T) {
	checkLeaks(t)
	_, addr := startServer(t, testConfig(), func(s *Server) {
		s.Handle("sleep", func(ctx context.Context, body []byte) ([]byte, error) {
			// Later requests finish first.
			d := time.Duration(10-int(body[0])) * 5 * time.Millisecond
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return body, nil
		})
	})
	c := dial(t, addr)
	if r := c.call("echo", 0, nil); r.Code != 0 || len(r.Body) != 0 {
		t.Fatalf("empty echo: %+v", r)
	}
	for i := range 10 {
		if err := c.send(protocol.Envelope{ID: uint64(100 + i), Method: "sleep", Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var order []uint64
	for range 10 {
		e, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		if e.Code != 0 || int(e.Body[0]) != int(e.ID-100) {
			t.Fatalf("response %+v does not match its id", e)
		}
		order = append(order, e.ID)
	}
	if slices.IsSorted(order) {
		t.Logf("responses came back in request order %v (pipelining allowed reordering)", order)
	}
	slices.Sort(order)
	for i, id := range order {
		if id != uint64(100+i) {
			t.Fatalf("missing response ids: %v", order)
		}
	}
}

// TestErrorsAreGeneric: error responses carry a code and its fixed
// message; details and panics stay in the enclave log.
func TestErrorsAreGeneric(t *testing.T) {
	checkLeaks(t)
	var logs syncbuf.Buffer
	cfg := testConfig()
	cfg.Logger = newTextLogger(&logs)
	cfg.HandlerTimeout = 50 * time.Millisecond
	_, addr := startServer(t, cfg, func(s *Server) {
		s.Handle("leaky", func(context.Context, []byte) ([]byte, error) {
			return []byte("partial"), errors.New("db password=hunter2 rejected")
		})
		s.Handle("bad", func(context.Context, []byte) ([]byte, error) {
			return nil, fmt.Errorf("field x: %w", protocol.ErrBadRequest)
		})
		s.Handle("panic", func(context.Context, []byte) ([]byte, error) {
			panic("secret-panic-detail")
		})
		s.Handle("slow", func(ctx context.Context, _ []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
	})
	c := dial(t, addr)
	tests := []struct {
		method string
		code   protocol.Code
		inLog  string
	}{
		{"leaky", protocol.CodeInternal, "hunter2"},
		{"bad", protocol.CodeBadRequest, "field x"},
		{"panic", protocol.CodeInternal, "secret-panic-detail"},
		{"slow", protocol.CodeTimeout, "deadline exceeded"},
		{"nope", protocol.CodeUnknownMethod, `no handler for method \"nope\"`},
	}
	for i, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			r := c.call(tt.method, uint64(i), []byte("in"))
			if r.Code != tt.code || r.Message != tt.code.Message() || r.Body != nil {
				t.Fatalf("response %+v; want code %d with message %q and no body", r, tt.code, tt.code.Message())
			}
			if !strings.Contains(logs.String(), tt.inLog) {
				t.Fatalf("log lacks %q:\n%s", tt.inLog, logs.String())
			}
		})
	}
	if !strings.Contains(logs.String(), "goroutine ") || !strings.Contains(logs.String(), "handler panicked") {
		t.Fatalf("panic stack not logged:\n%s", logs.String())
	}
	// The connection survived every error.
	if r := c.call("echo", 99, []byte("still here")); string(r.Body) != "still here" {
		t.Fatalf("after errors: %+v", r)
	}
}

// rawFrame writes one frame with an arbitrary payload.
func (c *client) rawFrame(payload []byte) {
	c.t.Helper()
	if err := c.fw.WriteFrame(payload); err != nil {
		c.t.Fatal(err)
	}
}

func TestBadEnvelopes(t *testing.T) {
	checkLeaks(t)
	_, addr := startServer(t, testConfig(), nil)
	cborMap := func(m map[uint64]any) []byte {
		b, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		payload []byte
		wantID  uint64 // a bad-request response with this id; 0 means the connection is closed
	}{
		{"unknown key", cborMap(map[uint64]any{0: 1, 1: 42, 2: "echo", 9: "x"}), 42},
		{"wrong version", cborMap(map[uint64]any{0: 7, 1: 43, 2: "echo"}), 43},
		{"response sent to the server", cborMap(map[uint64]any{0: 1, 1: 44}), 44},
		{"method not text", cborMap(map[uint64]any{0: 1, 1: 45, 2: 5}), 45},
		{"not cbor", []byte("GET / HTTP/1.1\r\n"), 0},
		{"empty frame", nil, 0},
		{"id not a number", cborMap(map[uint64]any{0: 1, 1: "x", 2: "echo"}), 0},
		{"array", []byte{0x82, 0x01, 0x02}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			c.rawFrame(tt.payload)
			if tt.wantID == 0 {
				c.expectClosed(5 * time.Second)
				return
			}
			e, err := c.recv()
			if err != nil {
				t.Fatal(err)
			}
			if e.ID != tt.wantID || e.Code != protocol.CodeBadRequest || e.Message != protocol.CodeBadRequest.Message() {
				t.Fatalf("response %+v; want id %d, bad request", e, tt.wantID)
			}
			if r := c.call("echo", 1, []byte("next")); string(r.Body) != "next" {
				t.Fatalf("connection unusable after a bad request: %+v", r)
			}
		})
	}
}

// TestHugeLengthPrefix: ff ff ff ff closes that connection without the
// server allocating the declared 4 GiB, and others keep being served.
func TestHugeLengthPrefix(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	s, addr := startServer(t, cfg, nil)
	good := dial(t, addr)
	good.call("echo", 1, []byte("before"))

	for _, prefix := range []uint32{0xffffffff, protocol.MaxFrameSizeLimit + 1, protocol.DefaultMaxFrameSize + 1} {
		t.Run(fmt.Sprintf("%#x", prefix), func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			bad := dial(t, addr)
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], prefix)
			if _, err := bad.nc.Write(hdr[:]); err != nil {
				t.Fatal(err)
			}
			bad.expectClosed(5 * time.Second)
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Fatalf("server allocated %d bytes for a %d-byte length prefix", grew, prefix)
			}
			if r := good.call("echo", 2, []byte("after")); string(r.Body) != "after" {
				t.Fatalf("good client: %+v", r)
			}
		})
	}
	waitFor(t, 5*time.Second, "dropped connections to be counted", func() bool { return s.Stats().DroppedConns == 3 })
}

func TestResponseTooLarge(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.MaxFrameSize = 1024
	_, addr := startServer(t, cfg, func(s *Server) {
		s.Handle("big", func(context.Context, []byte) ([]byte, error) { return make([]byte, 2048), nil })
	})
	c := dial(t, addr)
	if r := c.call("big", 7, nil); r.Code != protocol.CodeTooLarge {
		t.Fatalf("response %+v; want too large", r)
	}
	if r := c.call("echo", 8, []byte("fine")); string(r.Body) != "fine" {
		t.Fatalf("after: %+v", r)
	}
}

// TestConnCap: with RefuseAtCap, connections beyond MaxConns are closed at
// once and counted, not queued; a freed slot is usable again.
func TestConnCap(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.MaxConns = 2
	cfg.RefuseAtCap = true // the old policy; eviction: TestEvictAtCap
	s, addr := startServer(t, cfg, nil)
	a, b := dial(t, addr), dial(t, addr)
	a.call("echo", 1, nil)
	b.call("echo", 1, nil)
	for i := range 3 {
		over := dial(t, addr)
		over.expectClosed(2 * time.Second)
		if got := s.Stats().RejectedConns; got != uint64(i+1) {
			t.Fatalf("RejectedConns = %d, want %d", got, i+1)
		}
	}
	a.nc.Close()
	waitFor(t, 5*time.Second, "a slot to free up", func() bool { return s.Stats().OpenConns == 1 })
	c := dial(t, addr)
	if r := c.call("echo", 2, []byte("in")); string(r.Body) != "in" {
		t.Fatalf("after a slot freed: %+v", r)
	}
	if st := s.Stats(); st.TotalConns != 3 || st.RejectedConns != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSlowloris: 1,000 connections that each send part of a frame and stall
// do not stop a well-behaved client, and are closed after ReadFrameTimeout.
func TestSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	checkLeaks(t)
	const n = 1000
	cfg := testConfig()
	cfg.MaxConns = n + 10
	cfg.ReadFrameTimeout = 3 * time.Second
	s, addr := startServer(t, cfg, nil)
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	conns := make([]*client, n)
	for i := range n {
		wg.Go(func() {
			nc, err := transport.Dial(context.Background(), addr)
			if err != nil {
				dialErrs.Add(1)
				return
			}
			// A length prefix announcing 100 bytes, then 3 of them.
			if _, err := nc.Write([]byte{0, 0, 0, 100, 0xa1, 0x00, 0x01}); err != nil {
				dialErrs.Add(1)
			}
			conns[i] = newClient(t, nc)
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
	}()
	if e := dialErrs.Load(); e != 0 {
		t.Fatalf("%d slowloris connections failed to start", e)
	}
	waitFor(t, 5*time.Second, "the slowloris connections to be accepted", func() bool { return s.Stats().TotalConns >= n })

	good := dial(t, addr)
	start := time.Now()
	for i := range uint64(200) {
		if r := good.call("echo", i, []byte("hi")); string(r.Body) != "hi" {
			t.Fatalf("good client: %+v", r)
		}
	}
	// All of them were served while every slowloris connection was open.
	if open := s.Stats().OpenConns; open != n+1 {
		t.Fatalf("%d connections open after the good client's requests (took %v), want %d", open, time.Since(start), n+1)
	}
	// Every stalled connection is closed by ReadFrameTimeout.
	waitFor(t, 10*time.Second, "slowloris connections to be closed", func() bool { return s.Stats().OpenConns == 1 })
	if st := s.Stats(); st.DroppedConns != n {
		t.Fatalf("DroppedConns = %d, want %d", st.DroppedConns, n)
	}
	for _, c := range conns[:10] {
		c.expectClosed(time.Second)
	}
}

type fakeAttester struct {
	err error
	got attest.Request
}

func (f *fakeAttester) Attest(ctx context.Context, r attest.Request) ([]byte, error) {
	if len(r.Nonce) == 32 && r.UserData == nil && r.PublicKey == nil {
		return testNSM().Attest(ctx, r) // the NSM startup checks
	}
	if f.err != nil {
		return nil, f.err
	}
	f.got = r
	return slices.Concat([]byte("doc:"), r.Nonce, r.UserData, r.PublicKey), nil
}

func TestBuiltins(t *testing.T) {
	checkLeaks(t)
	fa := &fakeAttester{}
	cfg := testConfig()
	cfg.Attester = fa
	Version = "v9.9.9-test"
	defer func() { Version = "" }()
	s, addr := startServer(t, cfg, nil)
	c := dial(t, addr)

	r := c.call(protocol.MethodHealth, 1, nil)
	var h protocol.HealthResponse
	if err := protocol.Unmarshal(r.Body, &h); err != nil || r.Code != 0 {
		t.Fatalf("health: %+v %v", r, err)
	}
	if h.Version != "v9.9.9-test" || h.Dev || len(h.Checks) != 5 || !h.Checks[0].OK || !h.Checks[4].OK || h.OpenConns != 1 || h.TotalConns != 1 {
		t.Fatalf("health = %+v", h)
	}

	attestBody := func(req protocol.AttestRequest) []byte {
		b, err := protocol.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := make([]byte, MaxAttestField+1)
	tests := []struct {
		name string
		body []byte
		code protocol.Code
		doc  string
	}{
		{"ok", attestBody(protocol.AttestRequest{Nonce: []byte("n"), UserData: []byte("u")}), 0, "doc:nu"},
		// KMS encrypts a Recipient answer to the document's public_key.
		{"public_key chosen by the caller", attestBody(protocol.AttestRequest{Nonce: []byte("n"), PublicKey: []byte("k")}), protocol.CodeBadRequest, ""},
		{"empty public_key", []byte{0xa1, 0x03, 0x40}, protocol.CodeBadRequest, ""},
		{"empty", nil, 0, "doc:"},
		{"limit", attestBody(protocol.AttestRequest{Nonce: big[:MaxAttestField]}), 0, "doc:" + string(big[:MaxAttestField])},
		{"nonce too large", attestBody(protocol.AttestRequest{Nonce: big}), protocol.CodeTooLarge, ""},
		{"user_data too large", attestBody(protocol.AttestRequest{UserData: big}), protocol.CodeTooLarge, ""},
		{"public_key too large", attestBody(protocol.AttestRequest{PublicKey: big}), protocol.CodeTooLarge, ""},
		{"not cbor", []byte{0xff}, protocol.CodeBadRequest, ""},
		{"unknown field", []byte{0xa1, 0x09, 0x01}, protocol.CodeBadRequest, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.call(protocol.MethodAttest, uint64(10+i), tt.body)
			if r.Code != tt.code {
				t.Fatalf("code %d, want %d", r.Code, tt.code)
			}
			if tt.code != 0 {
				return
			}
			var resp protocol.AttestResponse
			if err := protocol.Unmarshal(r.Body, &resp); err != nil || string(resp.Document) != tt.doc {
				t.Fatalf("document %q, %v; want %q", resp.Document, err, tt.doc)
			}
		})
	}
	fa.err = errors.New("nsm ioctl failed: EIO")
	if r := c.call(protocol.MethodAttest, 50, nil); r.Code != protocol.CodeInternal || r.Message != "internal error" {
		t.Fatalf("attester failure: %+v", r)
	}
	if st := s.Stats(); st.Requests < 10 || st.Errors < 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAttestUnavailable(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.Attester, cfg.Dev = nil, true // without an NSM, only --dev starts
	_, addr := startServer(t, cfg, nil)
	if r := dial(t, addr).call(protocol.MethodAttest, 1, nil); r.Code != protocol.CodeUnavailable {
		t.Fatalf("no attester: %+v", r)
	}
}

func TestServeTwice(t *testing.T) {
	checkLeaks(t)
	s, addr := startServer(t, testConfig(), nil)
	dial(t, addr).call("echo", 1, nil) // Serve is running
	ln := newPipeListener(nil)
	if err := s.ServeListener(context.Background(), ln); !errors.Is(err, ErrServerStarted) {
		t.Fatalf("second Serve = %v", err)
	}
	if err := s.Listen(context.Background()); err == nil {
		t.Fatal("second Listen succeeded")
	}
}
