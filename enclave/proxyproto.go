package enclave

import (
	"net"
	"time"

	"github.com/enclavekit/enclavekit/protocol/proxyproto"
)

// NewProxyV2Listener wraps ln, whose connections each begin with a PROXY
// protocol v2 header (from parent/ingress with ProxyProtocol on); it is
// proxyproto.NewListener, kept here beside the server it usually feeds.
// Accept does not wait for the header: it is read on the connection's
// first Read or RemoteAddr call, within timeout (0 means
// proxyproto.DefaultHeaderTimeout), so a peer that never sends one cannot
// stall the accept loop. RemoteAddr then reports the client address from
// the header (a *net.TCPAddr), or the underlying address for a LOCAL
// header. A missing or malformed header makes Read fail with an error
// wrapping proxyproto.ErrHeader; close the connection then. Remember that
// the parent writes the header: the address is for logs and rate limits,
// not for authentication.
func NewProxyV2Listener(ln net.Listener, timeout time.Duration) net.Listener {
	return proxyproto.NewListener(ln, timeout)
}
