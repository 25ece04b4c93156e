//go:build linux

package vsocktest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/parent/proxy"
	"github.com/enclavekit/enclavekit/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func requireVsock(t *testing.T) uint32 {
	t.Helper()
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skipf("vsock not available here: %v", err)
	}
	cid, err := transport.LocalCID()
	if err != nil {
		t.Skipf("vsock not available here: %v", err)
	}
	ln, err := transport.Listen(context.Background(), "vsock://any:0")
	if err != nil {
		t.Skipf("vsock not available here: cannot listen: %v", err)
	}
	ln.Close()
	return cid
}

var enclaveSys = fstest.MapFS{
	"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
	"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The enclave server listens on vsock://any:PORT, reports a vsock address,
// and its accept loop stops cleanly on cancel.
func TestEnclaveServerOnVsock(t *testing.T) {
	requireVsock(t)
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer nsm.Close()
	srv, err := enclave.New(enclave.Config{Addr: "vsock://any:0", SysFS: enclaveSys, Logger: quiet(), DrainTimeout: time.Second, Attester: nsm})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := srv.Listen(ctx); err != nil {
		t.Fatalf("Listen on vsock: %v", err)
	}
	addr := transport.AddrOf(srv.Addr())
	if !strings.HasPrefix(addr, "vsock://") {
		t.Fatalf("Addr = %q, want a vsock address", addr)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// The log sink and an egress proxy route listen on vsock and stop cleanly.
func TestParentListenersOnVsock(t *testing.T) {
	requireVsock(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	sink, err := logsink.New(logsink.Config{Listen: "vsock://any:0", Handler: quiet().Handler()})
	if err != nil {
		t.Fatal(err)
	}
	sinkDone := make(chan error, 1)
	go func() { sinkDone <- sink.ListenAndServe(ctx) }()

	p, err := proxy.New(proxy.Config{
		Routes:    []proxy.Route{{Listen: "vsock://any:0", To: "127.0.0.1:9"}},
		Allowlist: []proxy.AllowEntry{{Address: "127.0.0.1", Port: 9}},
		Limits:    proxy.Limits{DrainTimeout: time.Second},
	}, proxy.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(ctx); err != nil {
		t.Fatalf("proxy route on vsock: %v", err)
	}
	if a := p.Addr(0); !strings.HasPrefix(a, "vsock://") {
		t.Fatalf("route address %q, want vsock", a)
	}
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- p.Serve(ctx) }()

	cancel()
	for name, ch := range map[string]chan error{"log sink": sinkDone, "proxy": proxyDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s after cancel: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not stop after cancel", name)
		}
	}
}

// Dials to context IDs with no peer fail with *net.OpError within the
// context, from the parent client as from the transport.
func TestDialsWithoutPeerFail(t *testing.T) {
	local := requireVsock(t)
	for _, addr := range []string{"vsock://host:5000", "vsock://16:5000", "vsock://" + strconv.FormatUint(uint64(local), 10) + ":5000"} {
		t.Run(addr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			start := time.Now()
			c, err := parent.Dial(ctx, addr, parent.Options{})
			if err == nil {
				c.Close()
				t.Skipf("something answered at %s", addr)
			}
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Fatalf("Dial(%s) = %T %v, want a *net.OpError inside", addr, err, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Dial took %v, past its 2s context", d)
			}
		})
	}
}

// An enclave whose parent log sink is absent (CID 3 has no peer here)
// keeps logging without blocking: records go to the console and are
// counted as dropped for the sink.
func TestLogHandlerWithoutSinkDoesNotBlock(t *testing.T) {
	requireVsock(t)
	var console syncbuf.Buffer
	h, err := enclave.NewLogHandler(enclave.LogConfig{Addr: "vsock://parent:45999", Console: &console, SinkQueue: 8})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	start := time.Now()
	for i := range 1000 {
		log.Info("record", "i", i)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("1000 records took %v with no sink: logging blocks", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.Close(ctx)
	if h.Sent() != 0 {
		t.Fatalf("Sent = %d with no sink", h.Sent())
	}
	if h.Dropped() == 0 {
		t.Fatal("no record counted as dropped with no sink")
	}
}
