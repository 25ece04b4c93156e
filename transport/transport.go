package transport

import (
	"context"
	"net"
	"strings"
)

// Listen opens a listener on addr ("vsock://any:5000", "tcp://127.0.0.1:0").
// The context bounds only the set-up, not the listener's life.
// Errors are *net.OpError; a malformed address also matches ErrBadAddr.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: networkOf(addr), Err: err}
	}
	return ListenAddr(ctx, a)
}

// ListenAddr is Listen with a parsed address.
func ListenAddr(ctx context.Context, a Addr) (net.Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "listen", Net: a.Network, Err: err}
	}
	switch a.Network {
	case NetworkVsock:
		return listenVsock(a.CID, a.Port)
	case NetworkTCP:
		var lc net.ListenConfig
		return lc.Listen(ctx, "tcp", a.HostPort)
	}
	return nil, &net.OpError{Op: "listen", Net: a.Network, Err: ErrBadAddr}
}

// Dial connects to addr. The context's deadline and cancellation bound the
// connection set-up; once connected, the context no longer matters.
// Errors are *net.OpError; a malformed address also matches ErrBadAddr.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: networkOf(addr), Err: err}
	}
	return DialAddr(ctx, a)
}

// DialAddr is Dial with a parsed address.
func DialAddr(ctx context.Context, a Addr) (net.Conn, error) {
	switch a.Network {
	case NetworkVsock:
		return dialVsock(ctx, a.CID, a.Port)
	case NetworkTCP:
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.HostPort)
	}
	return nil, &net.OpError{Op: "dial", Net: a.Network, Err: ErrBadAddr}
}

// AddrOf returns the transport address of a listener's or connection's
// net.Addr in ParseAddr's syntax, e.g. to print a listener's chosen port.
func AddrOf(na net.Addr) string {
	switch a := na.(type) {
	case *net.TCPAddr:
		return "tcp://" + a.String()
	}
	if na.Network() == NetworkVsock {
		return vsockAddrString(na)
	}
	return na.Network() + "://" + na.String()
}

// networkOf names the network of a (possibly malformed) address for an
// error: its scheme when it is one of ours, else "".
func networkOf(addr string) string {
	scheme, _, _ := strings.Cut(addr, "://")
	switch n := strings.ToLower(scheme); n {
	case NetworkVsock, NetworkTCP:
		return n
	}
	return ""
}
