//go:build !linux

package transport

import (
	"context"
	"net"
	"syscall"
)

func listenVsock(cid, port uint32) (net.Listener, error) {
	return nil, &net.OpError{Op: "listen", Net: NetworkVsock, Err: ErrVsockUnsupported}
}

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: NetworkVsock, Err: ErrVsockUnsupported}
}

func vsockAddrString(na net.Addr) string { return "vsock://" + na.String() }

// LocalCID returns this machine's vsock context ID; vsock is Linux only.
func LocalCID() (uint32, error) { return 0, ErrVsockUnsupported }

func vsockSyscallConn(net.Conn) syscall.Conn { return nil }
