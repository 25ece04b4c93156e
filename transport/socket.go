package transport

import (
	"net"
	"syscall"
)

// RawSocket returns the RawConn of a connection whose Read is the read(2)
// of its descriptor: a TCP, Unix or vsock connection. It returns nil for
// any other, wrappers included: they may change the bytes or hold some
// already read, so reading or polling the descriptor directly is not the
// same as calling Read. The relay's splice path and the enclave server's
// read watch use it.
func RawSocket(c net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		if sc = vsockSyscallConn(c); sc == nil {
			return nil
		}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
