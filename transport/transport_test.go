package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/nettest"
)

// TestTCPConn runs the standard net.Conn conformance suite over the TCP
// transport, as the vsock and TCP paths share every layer above it.
func TestTCPConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		ctx := context.Background()
		ln, err := Listen(ctx, "tcp://127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		defer ln.Close()
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			c, err := ln.Accept()
			ch <- result{c, err}
		}()
		c1, err = Dial(ctx, AddrOf(ln.Addr()))
		if err != nil {
			return nil, nil, nil, err
		}
		r := <-ch
		if r.err != nil {
			c1.Close()
			return nil, nil, nil, r.err
		}
		return c1, r.c, func() { c1.Close(); r.c.Close() }, nil
	})
}

func TestListenDialTCPRoundTrip(t *testing.T) {
	ctx := t.Context()
	ln, err := Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := AddrOf(ln.Addr())
	if !strings.HasPrefix(addr, "tcp://127.0.0.1:") {
		t.Fatalf("AddrOf = %q", addr)
	}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		done <- err
	}()
	c, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDialHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, "tcp://127.0.0.1:1")
	if err == nil {
		t.Fatal("dial with a cancelled context succeeded")
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %T %v, want *net.OpError", err, err)
	}
	if _, err := Listen(ctx, "tcp://127.0.0.1:0"); err == nil {
		t.Fatal("listen with a cancelled context succeeded")
	}
}

func TestBadAddrs(t *testing.T) {
	ctx := context.Background()
	if _, err := Dial(ctx, "udp://x:1"); !errors.Is(err, ErrBadAddr) {
		t.Fatalf("Dial: %v", err)
	}
	if _, err := Listen(ctx, "vsock://x:1"); !errors.Is(err, ErrBadAddr) {
		t.Fatalf("Listen: %v", err)
	}
	if _, err := DialAddr(ctx, Addr{}); !errors.Is(err, ErrBadAddr) {
		t.Fatalf("DialAddr(zero): %v", err)
	}
}
