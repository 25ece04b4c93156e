package enclave

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol/proxyproto"
)

// The header format, Parse and the listener itself are tested in
// protocol/proxyproto; these tests stack the listener under the server.

// proxyHeader is the PROXY v2 header the parent's ingress writes for a TCP
// connection from src to dst.
func proxyHeader(src, dst netip.AddrPort) []byte {
	return proxyproto.Append(nil, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
}

// TestProxyV2SilentPeersDoNotStallServer: five connections that never send
// their PROXY header cost the server nothing but their own goroutines: a
// good client's request is answered at once (in fake time), and the silent
// ones are closed when their header timeout expires.
func TestProxyV2SilentPeersDoNotStallServer(t *testing.T) {
	tests := []struct {
		name   string
		silent int
		early  []byte // what the silent peers send: nothing, or part of a header
	}{
		{"five silent", 5, nil},
		{"five with half a signature", 5, proxyproto.Signature[:6]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const headerTimeout = 10 * time.Second
				s, err := New(bubbleConfig())
				if err != nil {
					t.Fatal(err)
				}
				s.Handle("echo", echo)
				pl := newPipeListener(nil)
				stop := serveOn(s, NewProxyV2Listener(pl, headerTimeout))
				var silent []net.Conn
				for range tt.silent {
					c, err := pl.Dial()
					if err != nil {
						t.Fatal(err)
					}
					if tt.early != nil {
						go c.Write(tt.early)
					}
					silent = append(silent, c)
				}
				synctest.Wait()
				start := time.Now()
				nc, err := pl.Dial()
				if err != nil {
					t.Fatal(err)
				}
				hdr := proxyHeader(netip.MustParseAddrPort("198.51.100.9:40000"), netip.MustParseAddrPort("127.0.0.1:443"))
				wrote := make(chan struct{})
				go func() { // net.Pipe writes wait for the reader
					defer close(wrote)
					nc.Write(hdr)
				}()
				<-wrote
				good := newClient(t, nc)
				if e := good.call("echo", 1, []byte("hi")); string(e.Body) != "hi" {
					t.Fatalf("echo = %+v", e)
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("good client waited %v behind silent peers", d)
				}
				if got := s.Stats().OpenConns; got != uint64(tt.silent+1) {
					t.Errorf("OpenConns = %d, want %d", got, tt.silent+1)
				}
				time.Sleep(headerTimeout)
				synctest.Wait()
				if got := s.Stats().OpenConns; got != 1 {
					t.Errorf("after the header timeout OpenConns = %d, want 1 (the good client)", got)
				}
				for _, c := range silent {
					c.Close()
				}
				nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
