//go:build linux

package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireVsock skips the test where AF_VSOCK is unusable (no /dev/vsock, no
// vsock kernel module, or a sandbox that forbids the socket family).
func requireVsock(t *testing.T) uint32 {
	t.Helper()
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skipf("vsock not available here: %v", err)
	}
	cid, err := LocalCID()
	if err != nil {
		t.Skipf("vsock not available here: cannot read the local CID: %v", err)
	}
	return cid
}

func TestVsockListen(t *testing.T) {
	requireVsock(t)
	ctx := t.Context()
	for _, addr := range []string{"vsock://any:0", "vsock://any:45123"} {
		ln, err := Listen(ctx, addr)
		if err != nil {
			t.Fatalf("Listen(%q): %v", addr, err)
		}
		got := AddrOf(ln.Addr())
		if !strings.HasPrefix(got, "vsock://") {
			t.Errorf("AddrOf = %q, want a vsock:// address", got)
		}
		if _, err := ParseAddr(got); err != nil {
			t.Errorf("AddrOf gave %q, which does not parse: %v", got, err)
		}
		// Accept returns promptly once the listener is closed.
		done := make(chan error, 1)
		go func() { _, err := ln.Accept(); done <- err }()
		ln.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Accept did not return after Close")
		}
	}
}

func TestVsockListenTwiceOnOnePort(t *testing.T) {
	requireVsock(t)
	ln, err := Listen(t.Context(), "vsock://any:45124")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(t.Context(), "vsock://any:45124")
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second Listen: %v, want EADDRINUSE", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %T, want *net.OpError", err)
	}
}

// TestVsockDialErrors dials peers that cannot answer on a machine with vsock
// but no enclave: each attempt must fail (never hang past the context) with a
// *net.OpError.
func TestVsockDialErrors(t *testing.T) {
	local := requireVsock(t)
	tests := []struct {
		name string
		cid  uint32
	}{
		{"host", CIDHost},
		{"local CID", local},
		{"no such guest", 4242},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			c, err := DialAddr(ctx, Addr{Network: NetworkVsock, CID: tt.cid, Port: 45125})
			if err == nil {
				c.Close()
				t.Skipf("something answered on CID %d port 45125", tt.cid)
			}
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Fatalf("err = %T %v, want *net.OpError", err, err)
			}
			t.Logf("CID %d: %v", tt.cid, err)
		})
	}
}

// TestRelayVsock relays vsock (the enclave's side in production) to TCP
// both ways, where the host has vsock loopback (CID 1): the bytes arrive
// whole, and a quiet relay holds no buffer. Skipped elsewhere.
func TestRelayVsock(t *testing.T) {
	requireVsock(t)
	ln, err := Listen(t.Context(), "vsock://any:0")
	if err != nil {
		t.Skipf("vsock listen: %v", err)
	}
	defer ln.Close()
	la, err := ParseAddr(AddrOf(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	client, err := DialAddr(ctx, Addr{Network: NetworkVsock, CID: CIDLocal, Port: la.Port})
	cancel()
	if err != nil {
		t.Skipf("no vsock loopback here: %v", err)
	}
	defer client.Close()
	a := <-accepted
	defer a.Close()
	b, server := connPair(t, "tcp")
	done := make(chan error, 1)
	go func() {
		_, _, err := (&Relay{Idle: time.Minute}).Run(context.Background(), a, b)
		done <- err
	}()
	io.WriteString(client, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	io.WriteString(server, "pong")
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("back: %q %v", buf, err)
	}
	for range 500 {
		if relayBufsHeld.Load() == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := relayBufsHeld.Load(); n != 0 {
		t.Errorf("a quiet vsock relay holds %d buffers, want 0", n)
	}
	const up, down = 8 << 20, 2 << 20
	var wg sync.WaitGroup
	var srvSent, srvGot [32]byte
	var srvN int64
	var srvErr error
	wg.Go(func() { srvSent, srvGot, srvN, srvErr = sendRecv(server, 2, down) })
	cliSent, cliGot, cliN, err := sendRecv(client, 1, up)
	wg.Wait()
	if err != nil || srvErr != nil {
		t.Fatalf("client: %v; server: %v", err, srvErr)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if srvN != up || cliN != down || cliSent != srvGot || srvSent != cliGot {
		t.Errorf("bytes differ: server got %d of %d, client %d of %d", srvN, up, cliN, down)
	}
}
