package ingress_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/enclavekit/enclavekit/parent/ingress"
)

// Forward a parent port to the enclave, telling it the client's address.
func ExampleNew() {
	in, err := ingress.New(ingress.Config{
		Listen:        "tcp://0.0.0.0:443",
		Target:        "vsock://16:443",
		MaxConns:      512,
		ProxyProtocol: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = in // in.ListenAndServe(ctx) runs until ctx ends
	fmt.Println(in.Stats())
	// Output: {0 0 0 0}
}

// Forward connections from a loopback port to an echo server standing in
// for the enclave's listener (vsock://16:443 on a parent instance).
func ExampleServer_Serve() {
	enclaveLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer enclaveLn.Close()
	go func() {
		for {
			c, err := enclaveLn.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	in, err := ingress.New(ingress.Config{
		Target: "tcp://" + enclaveLn.Addr().String(),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite() // passed on to the enclave as a half-close
	reply, err := io.ReadAll(c)
	c.Close()
	fmt.Printf("%s %v\n", reply, err)

	fmt.Println(in.Stats().TotalConns)
	// Output:
	// hello <nil>
	// 1
}
