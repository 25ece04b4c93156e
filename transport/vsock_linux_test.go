//go:build linux

package transport

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
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
