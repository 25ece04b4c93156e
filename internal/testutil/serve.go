package testutil

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// Serve accepts connections from ln and runs handle on each (the
// connection is closed when handle returns) until the test ends; then it
// closes ln and waits for every handler.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// Echo writes back everything it reads until the peer closes.
func Echo(c net.Conn) { io.Copy(c, c) }

// RunServer runs serve(ctx, ln) (a server's Serve method) in the
// background until the test ends; then it cancels ctx and fails the test
// unless serve returned nil.
func RunServer(t testing.TB, ln net.Listener, serve func(context.Context, net.Listener) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}
