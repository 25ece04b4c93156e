package testutil

import (
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
)

func TestServeEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, Echo)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestRecorder(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, backend, Echo)
	r, err := NewRecorder(backend.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("secret"))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "secret" {
		t.Fatalf("through the recorder: %q, %v", buf, err)
	}
	if got := string(r.Bytes()); got != "secretsecret" {
		t.Fatalf("recorded %q, want both directions", got)
	}
}

func TestChanListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := NewChanListener()
		remote := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			accepted <- c
		}()
		client := ln.Dial(remote)
		server := <-accepted
		if got := server.RemoteAddr(); got != remote {
			t.Fatalf("RemoteAddr = %v, want %v", got, remote)
		}
		if ClosedNow(client) {
			t.Fatal("ClosedNow on an open pipe")
		}
		server.Close()
		if !ClosedNow(client) {
			t.Fatal("ClosedNow after the peer closed = false")
		}
		client.Close()
		ln.Close()
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	})
}
