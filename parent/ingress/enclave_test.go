package ingress

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/testutil"
)

// The enclave learns the client's address: the ingress writes a PROXY v2
// header and enclave.NewProxyV2Listener reads it, byte for byte after it.
func TestProxyProtocolToEnclaveListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := enclave.NewProxyV2Listener(ln, 5*time.Second)
	defer pl.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := pl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().String()
		io.Copy(c, c) // echo what follows the header
	}()
	_, addr := startIngress(t, Config{Target: "tcp://" + ln.Addr().String(), ProxyProtocol: true})
	c := testutil.DialTCP(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the ingress = %q, %v", buf, err)
	}
	if got, want := <-seen, c.LocalAddr().String(); got != want {
		t.Fatalf("the enclave saw the client as %s, want %s", got, want)
	}
}
