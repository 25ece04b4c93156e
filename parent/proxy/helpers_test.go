package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers from a map; names not in it do not exist.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	ips, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if network == "ip" || (network == "ip4") == ip.Unmap().Is4() {
			out = append(out, ip)
		}
	}
	return out, nil
}

// guardDialer maps the destinations a test permits ("93.184.216.34:443")
// to real loopback addresses and fails the test if the proxy dials
// anything else, so a refused destination is never dialed for real even if
// the proxy is wrong.
type guardDialer struct {
	t      testing.TB
	mu     sync.Mutex
	routes map[string]string
	calls  []string
}

func newGuard(t testing.TB) *guardDialer {
	return &guardDialer{t: t, routes: map[string]string{}}
}

func (d *guardDialer) permit(dest, loopback string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.routes[dest] = loopback
}

func (d *guardDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	real, ok := d.routes[addr]
	d.calls = append(d.calls, addr)
	d.mu.Unlock()
	if !ok {
		d.t.Errorf("proxy dialed %s %s, which the test did not permit", network, addr)
		return nil, errors.New("guardDialer: destination not permitted")
	}
	ap, err := netip.ParseAddrPort(real)
	if err != nil || !ap.Addr().IsLoopback() {
		// Errorf, not Fatalf: this runs on the proxy's goroutine.
		d.t.Errorf("guardDialer: %q is not a loopback address", real)
		return nil, errors.New("guardDialer: not a loopback address")
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", real)
}

func (d *guardDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// startBackend serves handle on a loopback listener until the test ends.
func startBackend(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, ln, handle)
	return ln.Addr().String()
}

// echo copies everything back, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// startProxy runs New+Serve until the test ends and returns the proxy
// (already listening).
func startProxy(t testing.TB, cfg Config, opts Options) *Proxy {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p
}

// hostPortOf strips "tcp://" from a transport address.
func hostPortOf(addr string) string { return strings.TrimPrefix(addr, "tcp://") }

func allowFor(hp string) AllowEntry {
	ap := netip.MustParseAddrPort(hp)
	return AllowEntry{Address: ap.Addr().String(), Port: int(ap.Port())}
}

// metricValue reads a counter's or gauge's current value.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	panic("metricValue: not a counter or gauge")
}
