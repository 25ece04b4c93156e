//go:build linux

package transport

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/vsock"
)

func listenVsock(cid, port uint32) (net.Listener, error) {
	l, err := vsock.ListenContextID(cid, port, nil)
	if err != nil {
		return nil, err
	}
	return &vsockListener{Listener: l}, nil
}

// vsockListener makes Accept on a closed listener report net.ErrClosed, as
// TCP listeners do; the vsock package reports the closed descriptor's EBADF,
// which accept loops would otherwise mistake for a real failure.
type vsockListener struct {
	*vsock.Listener
	closed atomic.Bool
}

func (l *vsockListener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

func (l *vsockListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.closed.Load() && !errors.Is(err, net.ErrClosed) {
		return nil, &net.OpError{Op: "accept", Net: NetworkVsock, Addr: l.Addr(), Err: net.ErrClosed}
	}
	return c, err
}

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	return vsock.DialContext(ctx, cid, port, nil)
}

func vsockAddrString(na net.Addr) string {
	if a, ok := na.(*vsock.Addr); ok {
		cid := strconv.FormatUint(uint64(a.ContextID), 10)
		if a.ContextID == CIDAny {
			cid = "any"
		}
		return "vsock://" + cid + ":" + strconv.FormatUint(uint64(a.Port), 10)
	}
	return "vsock://" + na.String()
}

// LocalCID returns this machine's vsock context ID (3 on a parent instance,
// 16 or more inside an enclave).
func LocalCID() (uint32, error) { return vsock.ContextID() }

// vsockSyscallConn returns c when it is a vsock connection, whose Read is
// its descriptor's read(2), else nil.
func vsockSyscallConn(c net.Conn) syscall.Conn {
	if vc, ok := c.(*vsock.Conn); ok {
		return vc
	}
	return nil
}
