package parent

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// closedProbe tells, without blocking and without taking the connection's
// read lock, whether the peer has closed a socket that no one is reading:
// recv(2) with MSG_PEEK|MSG_DONTWAIT sees an end of stream or an error
// while leaving any waiting bytes in place.
type closedProbe struct {
	rc  syscall.RawConn
	f   func(fd uintptr) // built once, so that a probe does not allocate
	err error
}

func newClosedProbe(nc net.Conn) *closedProbe {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &closedProbe{rc: rc}
	p.f = func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			p.err = nil // open, nothing to read
		case err != nil:
			p.err = err
		case n == 0:
			p.err = errPeerClosed
		default:
			p.err = nil // bytes wait: a late response, read by the next reader
		}
	}
	return p
}

// closed returns why the socket is unusable, or nil. A nil probe (not a
// socket) reports nothing.
func (p *closedProbe) closed() error {
	if p == nil {
		return nil
	}
	if err := p.rc.Control(p.f); err != nil {
		return err
	}
	return p.err
}

var errPeerClosed = errors.New("the enclave closed the connection")
