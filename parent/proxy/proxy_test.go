package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// streamSend writes n bytes to w and returns their SHA-256. The bytes are
// a 1 MiB pseudo-random pattern (seeded) with a running counter stamped
// every 256 KiB, so that lost, repeated or reordered chunks change the hash
// while generating costs next to nothing.
func streamSend(w io.Writer, seed uint64, n int64) ([]byte, error) {
	pattern := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(pattern)
	const chunk = 256 << 10
	h := sha256.New()
	for i := uint64(0); n > 0; i++ {
		off := int(i%4) * chunk
		b := pattern[off : off+int(min(chunk, n))]
		binary.LittleEndian.PutUint64(b, i)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
		n -= int64(len(b))
	}
	return h.Sum(nil), nil
}

// streamRecv reads r to EOF, hashing and counting.
func streamRecv(r io.Reader) ([]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if err == io.EOF {
			return h.Sum(nil), total, nil
		}
		if err != nil {
			return nil, total, err
		}
	}
}

// TestTransferByteExact moves 1 GiB from the enclave side to the backend
// and, at the same time, 64 MiB back, through a fixed route (TCP on both
// sides, so the splice path), with SHA-256 at both ends and half-close
// ending each direction. In -short mode the 1 GiB becomes 64 MiB.
func TestTransferByteExact(t *testing.T) {
	size, back := int64(1<<30), int64(64<<20)
	if testing.Short() {
		size = 64 << 20
	}
	transferByteExact(t, size, back, Options{})
}

// transferByteExact sends size bytes up and back bytes down at once
// through a fixed route to a backend, and checks both with SHA-256 at each
// end, the sizes, and the byte metrics.
func transferByteExact(t *testing.T, size, back int64, opts Options) {
	t.Helper()
	type result struct {
		sum []byte
		n   int64
		err error
	}
	var serverGot, serverSent result
	serverDone := make(chan struct{})
	backend := startBackend(t, func(c net.Conn) {
		defer close(serverDone)
		var wg sync.WaitGroup
		wg.Go(func() {
			serverSent.sum, serverSent.err = streamSend(c, 2, back)
			c.(*net.TCPConn).CloseWrite()
		})
		serverGot.sum, serverGot.n, serverGot.err = streamRecv(c)
		wg.Wait()
	})
	p := startProxy(t, Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: backend}},
		Allowlist: []AllowEntry{allowFor(backend)},
	}, opts)

	start := time.Now()
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var clientSent result
	var wg sync.WaitGroup
	wg.Go(func() {
		clientSent.sum, clientSent.err = streamSend(c, 1, size)
		c.(*net.TCPConn).CloseWrite()
	})
	gotSum, gotN, err := streamRecv(c)
	wg.Wait()
	elapsed := time.Since(start)
	if err != nil || clientSent.err != nil {
		t.Fatalf("client: recv %v, send %v", err, clientSent.err)
	}
	<-serverDone
	waitFor(t, func() bool { return metricValue(p.m.open.WithLabelValues(p.routes[0].Name)) == 0 })
	if serverGot.err != nil || serverSent.err != nil {
		t.Fatalf("server: recv %v, send %v", serverGot.err, serverSent.err)
	}
	if gotN != back || serverGot.n != size {
		t.Fatalf("sizes: client got %d (want %d), server got %d (want %d)", gotN, back, serverGot.n, size)
	}
	if !bytes.Equal(clientSent.sum, serverGot.sum) {
		t.Errorf("upstream SHA-256: sent %x, received %x", clientSent.sum, serverGot.sum)
	}
	if !bytes.Equal(serverSent.sum, gotSum) {
		t.Errorf("downstream SHA-256: sent %x, received %x", serverSent.sum, gotSum)
	}
	up := metricValue(p.m.bytes.WithLabelValues(p.routes[0].Name, "upstream"))
	down := metricValue(p.m.bytes.WithLabelValues(p.routes[0].Name, "downstream"))
	if int64(up) != size || int64(down) != back {
		t.Errorf("bytes metrics: up %v down %v, want %d and %d", up, down, size, back)
	}
	t.Logf("%d MiB up and %d MiB down in %v (%.0f MiB/s up), sha256 %s…", size>>20, back>>20, elapsed,
		float64(size>>20)/elapsed.Seconds(), hex.EncodeToString(clientSent.sum[:8]))
}

// waitFor polls cond (for state that settles asynchronously on real
// sockets) for up to 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10s")
}

// TestHalfClose: the client half-closes after its request; the backend
// answers only after seeing EOF, and the client still reads the answer.
func TestHalfClose(t *testing.T) {
	backend := startBackend(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %q", req)
	})
	guard := newGuard(t)
	guard.permit(backend, backend)
	p := startProxy(t, Config{
		Routes: []Route{
			{Listen: "tcp://127.0.0.1:0", To: backend},
			{Listen: "tcp://127.0.0.1:0", Connect: true},
		},
		Allowlist: []AllowEntry{allowFor(backend)},
	}, Options{Dialer: guard})

	for i, name := range []string{"fixed", "connect"} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", hostPortOf(p.Addr(i)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if name == "connect" {
				fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", backend, backend)
				resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("CONNECT: %v %v", resp, err)
				}
			}
			io.WriteString(c, "hello")
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != `got "hello"` {
				t.Errorf("got %q", got)
			}
		})
	}
}

// TestConnectHTTPSClient uses the CONNECT route as a standard HTTPS proxy.
func TestConnectHTTPSClient(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over TLS")
	}))
	defer ts.Close()
	backend := strings.TrimPrefix(ts.URL, "https://")
	p := startProxy(t, Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", Connect: true}},
		Allowlist: []AllowEntry{allowFor(backend)},
	}, Options{})
	proxyURL, _ := url.Parse("http://" + hostPortOf(p.Addr(0)))
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(proxyURL)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over TLS" || resp.TLS == nil {
		t.Errorf("body %q tls %v", body, resp.TLS != nil)
	}
	_ = tls.VersionTLS13
}

// TestConnectRefusals checks what a CONNECT route answers, with a fake
// resolver and a dialer that fails the test if a refused destination is
// ever dialed.
func TestConnectRefusals(t *testing.T) {
	backend := startBackend(t, echo)
	guard := newGuard(t)
	guard.permit("93.184.216.34:443", backend)
	guard.permit("127.0.0.1:8443", backend)
	res := fakeResolver{
		"good.example":   {netip.MustParseAddr("93.184.216.34")},
		"rebind.example": {netip.MustParseAddr("169.254.169.254")},
		"mixed.example":  {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")},
		"local.example":  {netip.MustParseAddr("127.0.0.1")},
		"ula.example":    {netip.MustParseAddr("fd00:ec2::254")},
		"compat.example": {netip.MustParseAddr("::a9fe:a9fe")},
		"siit.example":   {netip.MustParseAddr("::ffff:0:7f00:1")},
		"teredo.example": {netip.MustParseAddr("2001:0:4136:e378:8000:63bf:5601:5601")},
	}
	reg := prometheus.NewRegistry()
	p := startProxy(t, Config{
		Routes: []Route{{Name: "egress", Listen: "tcp://127.0.0.1:0", Connect: true}},
		Allowlist: []AllowEntry{
			{Address: "good.example", Port: 443},
			{Address: "rebind.example", Port: 443},
			{Address: "mixed.example", Port: 443},
			{Address: "local.example", Port: 8443},
			{Address: "127.0.0.1", Port: 8443},
			{Address: "ula.example", Port: 443},
			{Address: "compat.example", Port: 443},
			{Address: "siit.example", Port: 443},
			{Address: "teredo.example", Port: 443},
		},
		Limits: Limits{MaxHeaderBytes: 1024},
	}, Options{Resolver: res, Dialer: guard, Registry: reg})

	tests := []struct {
		name    string
		request string
		status  int
		reason  string
	}{
		{"allowed name", "CONNECT good.example:443 HTTP/1.1\r\nHost: good.example:443\r\n\r\n", 200, ""},
		{"allowed name, upper case, trailing dot", "CONNECT GOOD.example.:443 HTTP/1.1\r\n\r\n", 200, ""},
		{"name allowlisted, resolves to own allowlisted IP", "CONNECT local.example:8443 HTTP/1.1\r\n\r\n", 200, ""},
		{"IMDS by IP", "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n", 403, ReasonNotAllowlisted},
		{"loopback by IP", "CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 403, ReasonNotAllowlisted},
		{"IPv4-mapped IMDS", "CONNECT [::ffff:169.254.169.254]:80 HTTP/1.1\r\n\r\n", 403, ReasonNotAllowlisted},
		{"wrong port", "CONNECT good.example:8443 HTTP/1.1\r\n\r\n", 403, ReasonNotAllowlisted},
		{"rebinding to IMDS", "CONNECT rebind.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"one of several IPs loopback", "CONNECT mixed.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"IPv6 IMDS (ULA)", "CONNECT ula.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"IPv4-compatible IMDS", "CONNECT compat.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"SIIT loopback", "CONNECT siit.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"Teredo to IMDS", "CONNECT teredo.example:443 HTTP/1.1\r\n\r\n", 403, ReasonDeniedIP},
		{"decimal IPv4", "CONNECT 2130706433:8443 HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"hex IPv4", "CONNECT 0x7f.1:8443 HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"short IPv4", "CONNECT 127.1:8443 HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"IMDS with trailing dot", "CONNECT 169.254.169.254.:80 HTTP/1.1\r\n\r\n", 403, ReasonNotAllowlisted},
		{"zone", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"GET", "GET http://good.example/ HTTP/1.1\r\n\r\n", 405, ReasonMethod},
		{"POST", "POST / HTTP/1.1\r\n\r\n", 405, ReasonMethod},
		{"malformed", "CONNECT\r\n\r\n", 400, ReasonBadRequest},
		{"no port", "CONNECT good.example HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"bad header", "CONNECT good.example:443 HTTP/1.1\r\nno colon\r\n\r\n", 400, ReasonBadRequest},
		{"oversized headers", "CONNECT good.example:443 HTTP/1.1\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431, ReasonHeaderTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metricValue(p.m.refused.WithLabelValues("egress", tt.reason))
			c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tt.request)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 200 {
				io.WriteString(c, "ping")
				buf := make([]byte, 4)
				if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
					t.Fatalf("echo: %q %v", buf, err)
				}
				return
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "CONNECT" {
				t.Errorf("405 without Allow: CONNECT")
			}
			after := metricValue(p.m.refused.WithLabelValues("egress", tt.reason))
			if after != before+1 {
				t.Errorf("refused{reason=%s} went from %v to %v", tt.reason, before, after)
			}
		})
	}
	for _, d := range guard.dialed() {
		if d != "93.184.216.34:443" && d != "127.0.0.1:8443" {
			t.Errorf("dialed %s", d)
		}
	}
}

// TestFixedRouteRefusedAtDial: a fixed route whose name starts resolving
// to IMDS (rebinding after start) is refused per connection.
func TestFixedRouteRebinding(t *testing.T) {
	guard := newGuard(t)
	res := &rebindingResolver{before: fakeResolver{"kms.example": {netip.MustParseAddr("93.184.216.34")}},
		after: fakeResolver{"kms.example": {netip.MustParseAddr("169.254.169.254")}}}
	p := startProxy(t, Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: "kms.example:443"}},
		Allowlist: []AllowEntry{{Address: "kms.example", Port: 443}},
	}, Options{Resolver: res, Dialer: guard})
	res.rebind()
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %d, %v; want EOF", n, err)
	}
	if got := metricValue(p.m.refused.WithLabelValues(p.routes[0].Name, ReasonDeniedIP)); got != 1 {
		t.Errorf("refused denied_ip = %v", got)
	}
	if d := guard.dialed(); len(d) != 0 {
		t.Errorf("dialed %v", d)
	}
}

// rebindingResolver answers from before until rebind, then from after.
type rebindingResolver struct {
	before, after fakeResolver
	mu            sync.Mutex
	rebound       bool
}

func (r *rebindingResolver) rebind() { r.mu.Lock(); r.rebound = true; r.mu.Unlock() }

func (r *rebindingResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	use := r.before
	if r.rebound {
		use = r.after
	}
	r.mu.Unlock()
	return use.LookupNetIP(ctx, network, host)
}

// TestRouteDeniedAtStart: a fixed route that the denylist refuses for
// every connection (here a name that resolves to loopback) is refused when
// the proxy starts, naming the route; an unresolvable name only warns.
func TestRouteDeniedAtStart(t *testing.T) {
	res := fakeResolver{"localhost": {netip.MustParseAddr("127.0.0.1")}}
	p, err := New(Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: "localhost:443"}},
		Allowlist: []AllowEntry{{Address: "localhost", Port: 443}},
	}, Options{Resolver: res, Dialer: newGuard(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Listen(context.Background())
	if err == nil || !strings.Contains(err.Error(), "routes[0].to: localhost:443 resolves to 127.0.0.1 (loopback)") {
		t.Fatalf("Listen = %v, want the route refused at start", err)
	}
	p2, err := New(Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: "unknown.example:443"}},
		Allowlist: []AllowEntry{{Address: "unknown.example", Port: 443}},
	}, Options{Resolver: res, Dialer: newGuard(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Listen(context.Background()); err != nil {
		t.Fatalf("an unresolvable name should only warn: %v", err)
	}
	p2.Close()
}

// TestVsockProxyAllowlistGivenToProxy: an allowlist-only file says what
// it is and what to run.
func TestVsockProxyAllowlistGivenToProxy(t *testing.T) {
	cfg, err := ParseConfig("allowlist.yaml", []byte("allowlist:\n- {address: kms.eu-west-1.amazonaws.com, port: 443}\n"))
	if err != nil {
		t.Fatal(err) // a valid vsock-proxy allowlist
	}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "enclavekit vsock-proxy --config FILE") {
		t.Fatalf("New = %v", err)
	}
}

// TestReload: a new allowlist applies to new connections only.
func TestReload(t *testing.T) {
	backend := startBackend(t, echo)
	p := startProxy(t, Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", Connect: true}},
		Allowlist: []AllowEntry{allowFor(backend)},
	}, Options{})
	connect := func() (net.Conn, *bufio.Reader, int) {
		c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", backend)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return c, br, resp.StatusCode
	}
	old, oldBR, st := connect()
	defer old.Close()
	if st != 200 {
		t.Fatalf("before reload: %d", st)
	}
	if err := p.Reload(Config{Allowlist: []AllowEntry{{Address: "other.example", Port: 443}}}); err != nil {
		t.Fatal(err)
	}
	c, _, st := connect()
	c.Close()
	if st != 403 {
		t.Errorf("after reload: %d, want 403", st)
	}
	// The connection opened before the reload still works.
	io.WriteString(old, "still here")
	buf := make([]byte, 10)
	if _, err := io.ReadFull(oldBR, buf); err != nil || string(buf) != "still here" {
		t.Errorf("old connection: %q %v", buf, err)
	}
	if err := p.Reload(Config{Allowlist: []AllowEntry{{Address: "bad host", Port: 443}}}); err == nil {
		t.Error("invalid allowlist accepted")
	}
	if err := p.Reload(Config{Allowlist: []AllowEntry{allowFor(backend)}}); err != nil {
		t.Fatal(err)
	}
	c, _, st = connect()
	c.Close()
	if st != 200 {
		t.Errorf("after second reload: %d", st)
	}
}

// TestReloadKeepsFixedRoutes: a reload that would orphan a fixed route fails.
func TestReloadKeepsFixedRoutes(t *testing.T) {
	p, err := New(Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: "kms.example:443"}},
		Allowlist: []AllowEntry{{Address: "kms.example", Port: 443}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(Config{}); err == nil {
		t.Error("reload without kms.example accepted")
	}
	if !p.allow.Load().Permits("kms.example", 443) {
		t.Error("old allowlist not kept")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	backend := startBackend(t, echo)
	p := startProxy(t, Config{
		Routes:    []Route{{Name: "kms", Listen: "tcp://127.0.0.1:0", To: backend}},
		Allowlist: []AllowEntry{allowFor(backend)},
		Metrics:   "tcp://127.0.0.1:0",
	}, Options{})
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "x")
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	tr := &http.Transport{DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + hostPortOf(p.MetricsAddr()) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`enclavekit_proxy_connections_total{route="kms"} 1`,
		`enclavekit_proxy_bytes_total{direction="upstream",route="kms"} 1`,
		`enclavekit_proxy_dial_duration_seconds_count{route="kms"} 1`,
		`enclavekit_proxy_connections_open{route="kms"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}, Options{}); err == nil {
		t.Error("no routes accepted")
	}
	reg := prometheus.NewRegistry()
	cfg := Config{Routes: []Route{{Listen: "tcp://127.0.0.1:0", Connect: true}}}
	if _, err := New(cfg, Options{Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, Options{Registry: reg}); err == nil {
		t.Error("second proxy on one registry accepted")
	}
}

func TestServeListenError(t *testing.T) {
	p, err := New(Config{Routes: []Route{{Listen: "tcp://127.0.0.1:0", Connect: true}}}, Options{
		Listen: func(context.Context, string) (net.Listener, error) { return nil, fmt.Errorf("no") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(context.Background()); err == nil {
		t.Error("Serve succeeded without a listener")
	}
}

// TestIdleSplicePath complements the synctest idle tests on real TCP
// sockets, where the splice path runs: a slow one-way stream (one byte per
// 150 ms, below a splice chunk per idle period) stays open with a 400 ms
// idle timeout, and the conn is closed once the stream stops.
func TestIdleSplicePath(t *testing.T) {
	const idle = 400 * time.Millisecond
	stop := make(chan struct{})
	backend := startBackend(t, func(c net.Conn) {
		for range 8 {
			time.Sleep(150 * time.Millisecond)
			if _, err := c.Write([]byte{1}); err != nil {
				return
			}
		}
		<-stop
	})
	defer close(stop)
	p := startProxy(t, Config{
		Routes:    []Route{{Listen: "tcp://127.0.0.1:0", To: backend}},
		Allowlist: []AllowEntry{allowFor(backend)},
		Limits:    Limits{IdleTimeout: idle},
	}, Options{})
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	for i := range 8 {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("byte %d: %v (closed while busy)", i, err)
		}
	}
	last := time.Now()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after the stream stopped: %v, want EOF", err)
	}
	if d := time.Since(last); d < idle {
		t.Errorf("closed %v after the last byte, before the %v idle timeout", d, idle)
	}
	waitFor(t, func() bool { return metricValue(p.m.errors.WithLabelValues(p.routes[0].Name, "idle_timeout")) == 1 })
}

// panicDialer panics on its first dial and dials loopback after.
type panicDialer struct {
	mu     sync.Mutex
	calls  int
	target string
}

func (d *panicDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.calls++
	first := d.calls == 1
	d.mu.Unlock()
	if first {
		panic("panicDialer: boom")
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.target)
}

// TestPanicReleasesSlot: a panic while serving one connection closes that
// connection, is counted, and gives its MaxConns slot back; the process
// (here, the test binary) keeps running.
func TestPanicReleasesSlot(t *testing.T) {
	backend := startBackend(t, echo)
	p := startProxy(t, Config{
		Routes:    []Route{{Name: "fixed", Listen: "tcp://127.0.0.1:0", To: backend}},
		Allowlist: []AllowEntry{allowFor(backend)},
		Limits:    Limits{MaxConns: 1},
	}, Options{Dialer: &panicDialer{target: backend}})
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %d, %v; want EOF", n, err)
	}
	c.Close()
	waitFor(t, func() bool { return p.open.Load() == 0 })
	if got := metricValue(p.m.errors.WithLabelValues("fixed", "panic")); got != 1 {
		t.Errorf("errors{panic} = %v, want 1", got)
	}
	if got := metricValue(p.m.open.WithLabelValues("fixed")); got != 0 {
		t.Errorf("connections_open = %v, want 0", got)
	}
	// The only slot is free again.
	c, err = net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("after the panic: %q %v", buf, err)
	}
}

// TestTransferByteExactBuffered is TestTransferByteExact on the buffered
// copy path (production's vsock↔TCP pair, where Go cannot splice): the
// accepted conns are wrapped so they are not *net.TCPConn. (That every
// buffer and big-buffer token is given back is checked by transport's
// TestRelayTransfer, on the same path.)
func TestTransferByteExactBuffered(t *testing.T) {
	size, back := int64(256<<20), int64(32<<20)
	if testing.Short() {
		size = 32 << 20
	}
	transferByteExact(t, size, back, Options{Listen: func(ctx context.Context, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", hostPortOf(addr))
		if err != nil {
			return nil, err
		}
		return hideTCPListener{ln}, nil
	}})
}

// TestConnectEarlyData: bytes sent in the same write as the CONNECT
// request (before the 200) reach the destination once, after the check,
// and are counted.
func TestConnectEarlyData(t *testing.T) {
	backend := startBackend(t, echo)
	guard := newGuard(t)
	guard.permit("93.184.216.34:443", backend)
	p := startProxy(t, Config{
		Routes:    []Route{{Name: "c", Listen: "tcp://127.0.0.1:0", Connect: true}},
		Allowlist: []AllowEntry{{Address: "93.184.216.34", Port: 443}},
	}, Options{Dialer: guard})
	c, err := net.Dial("tcp", hostPortOf(p.Addr(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT 93.184.216.34:443 HTTP/1.1\r\n\r\nearly")
	c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "early" {
		t.Errorf("echo: %q %v", got, err)
	}
	waitFor(t, func() bool { return metricValue(p.m.open.WithLabelValues("c")) == 0 })
	if up := metricValue(p.m.bytes.WithLabelValues("c", "upstream")); up != 5 {
		t.Errorf("upstream bytes = %v, want 5", up)
	}
}
