package transport_test

import (
	"context"
	"fmt"
	"io"

	"github.com/enclavekit/enclavekit/transport"
)

func ExampleParseAddr() {
	a, _ := transport.ParseAddr("vsock://parent:5001")
	fmt.Println(a.Network, a.CID, a.Port)
	_, err := transport.ParseAddr("vsock:5001")
	fmt.Println(err)
	// Output:
	// vsock 3 5001
	// transport: bad address "vsock:5001": missing scheme; want vsock://CID:PORT (CID a number or any, parent, host, local) or tcp://HOST:PORT
}

// The same code serves vsock in an enclave and loopback TCP in development.
func ExampleListen() {
	ctx := context.Background()
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0") // "vsock://any:5000" in an enclave
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello from the enclave"))
	}()
	c, err := transport.Dial(ctx, transport.AddrOf(ln.Addr()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	msg, _ := io.ReadAll(c)
	fmt.Println(string(msg))
	// Output: hello from the enclave
}
