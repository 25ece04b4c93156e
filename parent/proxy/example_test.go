package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/enclavekit/enclavekit/parent/proxy"
)

// Example runs a fixed route to a loopback backend (standing in for
// kms.<region>.amazonaws.com:443) and sends one request through it.
func Example() {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // until the client's half-close
		fmt.Fprintf(c, "hello, %s", req)
	}()
	ap := netip.MustParseAddrPort(backend.Addr().String())

	cfg := proxy.Config{
		Routes: []proxy.Route{{Name: "kms", Listen: "tcp://127.0.0.1:0", To: ap.String()}},
		// Loopback is denied unless the exact IP and port are listed.
		Allowlist: []proxy.AllowEntry{{Address: ap.Addr().String(), Port: int(ap.Port())}},
	}
	p, err := proxy.New(cfg, proxy.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Listen(ctx); err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error)
	go func() { done <- p.Serve(ctx) }()

	c, _ := net.Dial("tcp", strings.TrimPrefix(p.Addr(0), "tcp://"))
	io.WriteString(c, "enclave")
	c.(*net.TCPConn).CloseWrite()
	resp, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(resp))

	cancel()
	fmt.Println(<-done)
	// Output:
	// hello, enclave
	// <nil>
}

// ExampleParseConfig shows the YAML form and a refusal with file and line.
func ExampleParseConfig() {
	_, err := proxy.ParseConfig("proxy.yaml", []byte(`routes:
  - listen: vsock://any:8000
    to: kms.eu-west-1.amazonaws.com:443
allowlist:
  - {address: kms.us-east-1.amazonaws.com, port: 443}
`))
	fmt.Println(err)
	// Output:
	// proxy.yaml:3: routes[0].to: kms.eu-west-1.amazonaws.com:443 is not on the allowlist; add {address: kms.eu-west-1.amazonaws.com, port: 443}
}
