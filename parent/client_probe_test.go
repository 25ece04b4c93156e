package parent

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// A connection whose enclave hangs without closing it is retired after a
// call times out and a health probe gets nothing back; the next call runs
// on a fresh connection instead of timing out too.
func TestSilentConnectionRetired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := make(chan struct{})
		dialer, dials := countingPipeDialer(func(n int, c net.Conn) {
			defer c.Close()
			if n == 1 { // reads everything, answers nothing
				go func() { <-hang; c.Close() }()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}
			serveEcho(c)
		})
		defer close(hang)
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.CallRaw(ctx, "echo", []byte("x"))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call to the hung enclave: %v, want DeadlineExceeded", err)
		}
		time.Sleep(silentProbeTimeout + time.Second)
		synctest.Wait()
		got, err := c.CallRaw(context.Background(), "echo", []byte("after"))
		if err != nil || string(got) != "after" {
			t.Fatalf("call after the probe: %q, %v", got, err)
		}
		if n := dials(); n != 2 {
			t.Fatalf("%d dials, want 2 (the silent connection replaced once)", n)
		}
	})
}

// A slow handler is not a hung enclave: the call times out, the probe is
// answered, and the connection (with the slow call's late answer) stays.
func TestSlowHandlerKeepsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dialer, dials := countingPipeDialer(func(_ int, c net.Conn) {
			defer c.Close()
			serveSlow(c, 10*time.Second)
		})
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.CallRaw(ctx, "echo", []byte("slow"))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("slow call: %v, want DeadlineExceeded", err)
		}
		time.Sleep(silentProbeTimeout + time.Second)
		synctest.Wait()
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if got, err := c.CallRaw(ctx, "echo", []byte("next")); err != nil || string(got) != "next" {
			t.Fatalf("next call: %q, %v", got, err)
		}
		if n := dials(); n != 1 {
			t.Fatalf("%d dials, want 1: a slow but answering enclave must keep its connection", n)
		}
	})
}
