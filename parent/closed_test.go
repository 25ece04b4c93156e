package parent

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestIdleConnClosedByEnclave: between calls no one reads a connection
// (the reader role is free until the background reader takes it), so a
// close by the enclave there is found before the next request is sent,
// and that call is made on a fresh connection instead of failing.
func TestIdleConnClosedByEnclave(t *testing.T) {
	old := idleReadDelay
	idleReadDelay = time.Hour // the background reader never starts: only the check before sending can see the close
	t.Cleanup(func() { idleReadDelay = old })

	e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(t, e.addr, Options{PoolSize: 1})
	ctx := context.Background()
	if _, err := c.CallRaw(ctx, "echo", []byte("a")); err != nil {
		t.Fatal(err)
	}
	e.stop() // closes the connection; the client does not read it
	startEnclave(t, enclaveConfig(e.addr))
	if got, err := c.CallRaw(ctx, "echo", []byte("b")); err != nil || !bytes.Equal(got, []byte("b")) {
		t.Fatalf("call after the enclave closed the idle connection = %q, %v; want it made on a new connection", got, err)
	}
}
