package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/internal/testutil"
	"github.com/enclavekit/enclavekit/protocol/proxyproto"
	"github.com/enclavekit/enclavekit/transport"
)

// backend is the enclave end of the ingress in tests: a loopback listener
// whose connections are handled by fn.
func backend(t testing.TB, fn func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return transport.AddrOf(ln.Addr())
}

// startIngress runs an ingress to target on a loopback port; it is stopped
// at cleanup. It returns the ingress and its listen address (host:port).
func startIngress(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunServer(t, ln, in.Serve)
	return in, ln.Addr().String()
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet discards the ingress's log lines.
var quiet = slog.New(slog.DiscardHandler)

// TestTransfer100MiB streams 100 MiB each way through the ingress
// and compares SHA-256 digests at both ends; the end of the upload reaches
// the backend as EOF (half-close), which ends the backend's echo, whose EOF
// reaches the client.
func TestTransfer100MiB(t *testing.T) {
	size := int64(100 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	backendSum := make(chan []byte, 1)
	target := backend(t, func(c *net.TCPConn) {
		h := sha256.New()
		io.Copy(c, io.TeeReader(c, h)) // echo until the client's FIN
		backendSum <- h.Sum(nil)
		c.CloseWrite()
	})
	in, addr := startIngress(t, Config{Target: target})
	c := testutil.DialTCP(t, addr)

	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		src := io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), size)
		_, err := io.Copy(c, io.TeeReader(src, sent))
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	recv := sha256.New()
	n, err := io.Copy(recv, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("received %d bytes, sent %d", n, size)
	}
	want := sent.Sum(nil)
	if got := <-backendSum; !bytes.Equal(got, want) {
		t.Fatalf("backend SHA-256 %x, client sent %x", got, want)
	}
	if got := recv.Sum(nil); !bytes.Equal(got, want) {
		t.Fatalf("client received SHA-256 %x, want %x", got, want)
	}
	if st := in.Stats(); st.TotalConns != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestHalfClose: the client's FIN reaches the enclave while the
// enclave's side stays open for its answer, and the other way round.
func TestHalfClose(t *testing.T) {
	t.Run("client first", func(t *testing.T) {
		target := backend(t, func(c *net.TCPConn) {
			req, err := io.ReadAll(c) // ends only on the propagated FIN
			if err != nil {
				return
			}
			fmt.Fprintf(c, "got %q", req)
		})
		_, addr := startIngress(t, Config{Target: target})
		c := testutil.DialTCP(t, addr)
		io.WriteString(c, "request")
		c.CloseWrite()
		resp, err := io.ReadAll(c)
		if err != nil || string(resp) != `got "request"` {
			t.Fatalf("response %q, %v", resp, err)
		}
	})
	t.Run("enclave first", func(t *testing.T) {
		got := make(chan string, 1)
		target := backend(t, func(c *net.TCPConn) {
			io.WriteString(c, "banner")
			c.CloseWrite()
			req, _ := io.ReadAll(c)
			got <- string(req)
		})
		_, addr := startIngress(t, Config{Target: target})
		c := testutil.DialTCP(t, addr)
		banner, err := io.ReadAll(c) // EOF: the enclave half-closed
		if err != nil || string(banner) != "banner" {
			t.Fatalf("banner %q, %v", banner, err)
		}
		if _, err := io.WriteString(c, "after banner"); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if req := <-got; req != "after banner" {
			t.Fatalf("enclave read %q after its half-close", req)
		}
	})
}

func TestMaxConns(t *testing.T) {
	target := backend(t, func(c *net.TCPConn) { io.Copy(c, c) })
	// The old refuse-at-cap policy; eviction: TestEvictionSynctest.
	in, addr := startIngress(t, Config{Target: target, MaxConns: 1, RefuseAtCap: true})
	c1 := testutil.DialTCP(t, addr)
	io.WriteString(c1, "x")
	if _, err := io.ReadFull(c1, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c2 := testutil.DialTCP(t, addr)
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("second connection read %d, %v; want it closed", n, err)
	}
	if st := in.Stats(); st.RejectedConns != 1 || st.OpenConns != 1 {
		t.Fatalf("stats = %+v", st)
	}
	c1.Close()
	// The slot frees once the first connection is gone.
	for in.Stats().OpenConns != 0 {
		time.Sleep(time.Millisecond)
	}
	c3 := testutil.DialTCP(t, addr)
	io.WriteString(c3, "y")
	if _, err := io.ReadFull(c3, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestTargetDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	target := transport.AddrOf(ln.Addr())
	ln.Close() // nothing listens there now
	in, addr := startIngress(t, Config{Target: target})
	c := testutil.DialTCP(t, addr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	for in.Stats().FailedConns != 1 {
		time.Sleep(time.Millisecond)
	}
}

func TestProxyProtocol(t *testing.T) {
	type hdr struct {
		src, dst netip.AddrPort
		err      error
	}
	got := make(chan hdr, 1)
	target := backend(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Parse(br)
		got <- hdr{h.Src, h.Dst, err}
		io.Copy(c, br)
	})
	_, addr := startIngress(t, Config{Target: target, ProxyProtocol: true})
	c := testutil.DialTCP(t, addr)
	io.WriteString(c, "hello")
	h := <-got
	if h.err != nil {
		t.Fatal(h.err)
	}
	if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); h.src != want {
		t.Fatalf("PROXY source %v, want the client's %v", h.src, want)
	}
	if want := netip.MustParseAddrPort(addr); h.dst != want {
		t.Fatalf("PROXY destination %v, want the ingress's %v", h.dst, want)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Target: "vsock://16:443"}, true},
		{Config{Target: "vsock://16:443", Listen: "tcp://0.0.0.0:443", MaxConns: 10, IdleTimeout: -1}, true},
		{Config{}, false},
		{Config{Target: "http://x"}, false},
		{Config{Target: "vsock://16:443", Listen: "x"}, false},
		{Config{Target: "vsock://16:443", MaxConns: -1}, false},
		{Config{Target: "vsock://16:443", DialTimeout: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("Validate(%+v) = %v, want ok=%v (or ErrConfig)", tc.cfg, err, tc.ok)
		}
	}
}

// TestIdleSynctest: a connection with no traffic either way is cut
// after the idle timeout; traffic in one direction keeps both open.
func TestIdleSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The enclave talks every 6 s for 30 s; the client never does.
		m := startMemIngressTo(t, context.Background(), Config{IdleTimeout: 10 * time.Second}, func(enclave net.Conn) {
			for range 5 {
				time.Sleep(6 * time.Second)
				enclave.Write([]byte{1})
			}
			io.Copy(io.Discard, enclave)
		})
		defer m.stop()
		start := time.Now()
		client := m.dial("198.51.100.1")
		defer client.Close()
		io.Copy(io.Discard, client) // until the ingress closes it
		// Last byte at 30 s, then 10 s idle.
		if d := time.Since(start); d != 40*time.Second {
			t.Fatalf("relay ended after %v, want 40s", d)
		}
	})
}

// TestStalledWriterSynctest: a peer that stops reading is cut after
// the idle timeout even though the other side keeps sending.
func TestStalledWriterSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		// The enclave never reads.
		m := startMemIngressTo(t, context.Background(), Config{IdleTimeout: 5 * time.Second}, func(net.Conn) { <-release })
		defer m.stop()
		defer close(release)
		start := time.Now()
		client := m.dial("198.51.100.1")
		defer client.Close()
		for {
			// Zeros: whole empty frames, never a message in progress.
			if _, err := client.Write(make([]byte, 1024)); err != nil {
				break
			}
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Fatalf("relay ended after %v, want 5s", d)
		}
	})
}

// TestShutdown: ending Serve's context closes the forwarded
// connections and Serve returns after their goroutines ended.
func TestShutdown(t *testing.T) {
	target := backend(t, func(c *net.TCPConn) { io.Copy(c, c) })
	in, err := New(Config{Target: target, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Serve(ctx, ln) }()
	c := testutil.DialTCP(t, ln.Addr().String())
	io.WriteString(c, "x")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after ctx ended", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
		t.Fatalf("read after shutdown = %d, %v; want the connection closed", n, err)
	}
	if st := in.Stats(); st.OpenConns != 0 {
		t.Fatalf("stats after shutdown %+v", st)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestContextSynctest: ending Serve's context ends a relay with no
// idle timeout (here one that sent the PROXY header).
func TestContextSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		m := startMemIngressTo(t, ctx, Config{IdleTimeout: -1, ProxyProtocol: true}, func(enclave net.Conn) {
			io.Copy(io.Discard, enclave) // reads the header
		})
		defer m.stop()
		start := time.Now()
		client := m.dial("198.51.100.1")
		defer client.Close()
		io.Copy(io.Discard, client)
		if d := time.Since(start); d != time.Hour {
			t.Fatalf("relay ended after %v, want 1h", d)
		}
	})
}

// TestListenAndServe: ListenAndServe returns nil once ctx ended, and
// fails without Config.Listen.
func TestListenAndServe(t *testing.T) {
	in, err := New(Config{Listen: "tcp://127.0.0.1:0", Target: "tcp://127.0.0.1:1", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in.ListenAndServe(ctx) }()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("ListenAndServe = %v, want nil once ctx ended", err)
	}
	noListen, _ := New(Config{Target: "tcp://127.0.0.1:1"})
	if err := noListen.ListenAndServe(context.Background()); err == nil {
		t.Error("ListenAndServe without Listen succeeded")
	}
}
