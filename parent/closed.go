package parent

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/enclavekit/enclavekit/transport"
)

// closedProbe tells, without blocking and without taking the connection's
// read lock, whether the peer has closed a socket that no one is reading:
// recv(2) with MSG_PEEK|MSG_DONTWAIT sees an end of stream or an error
// while leaving any waiting bytes in place.
type closedProbe struct {
	mu  sync.Mutex // one probe at a time; the others skip it
	rc  syscall.RawConn
	f   func(fd uintptr) // built once, so that a probe does not allocate
	err error
	buf [1]byte
}

// newClosedProbe returns a probe for a TCP, Unix or vsock connection
// (transport.RawSocket), else nil.
func newClosedProbe(nc net.Conn) *closedProbe {
	rc := transport.RawSocket(nc)
	if rc == nil {
		return nil
	}
	p := &closedProbe{rc: rc}
	p.f = func(fd uintptr) {
		// recvfrom(2) without a source address: unix.Recvfrom would
		// allocate one per call.
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EAGAIN || errno == unix.EINTR:
			p.err = nil // open, nothing to read
		case errno != 0:
			p.err = errno
		case r == 0:
			p.err = errPeerClosed
		default:
			p.err = nil // bytes wait: a late response, read by the next reader
		}
	}
	return p
}

// closed returns why the socket is unusable, or nil. A nil probe (not a
// socket) reports nothing, nor does one made while another runs.
func (p *closedProbe) closed() error {
	if p == nil || !p.mu.TryLock() {
		return nil
	}
	defer p.mu.Unlock()
	if err := p.rc.Control(p.f); err != nil {
		return err
	}
	return p.err
}

var errPeerClosed = errors.New("the enclave closed the connection")
