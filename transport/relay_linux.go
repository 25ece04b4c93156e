package transport

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// fastPath is how a direction reads on Linux when its source is a socket
// it can read directly: it waits for readability holding no buffer
// (RawConn.Read with a callback that finds nothing to read returns false,
// and the runtime's poller wakes it), then takes a buffer, or, when the
// bytes can be spliced, asks the kernel how many are queued and splices
// exactly those, so that the splice never waits (holding a pipe) for more;
// and no more than dst's send buffer takes at once, so that it does not
// wait for dst's reader either (when that buffer is full, the bytes go
// through a buffer instead, whose write sees the reader's progress).
type fastPath struct {
	rc   syscall.RawConn // src's; nil: no fast path
	to   *net.TCPConn    // dst, while src to dst is spliced
	toRC syscall.RawConn // to's
	h    *half
	// inqSlack is how many of the bytes SIOCINQ counts a read may skip: 1
	// on a Unix socket, whose count includes a pending out-of-band byte
	// (which a stream read drops).
	inqSlack int

	onRead, onSplice func(fd uintptr) bool // the callbacks, made once

	// Results of a callback.
	n, avail int
	err      error

	lr io.LimitedReader
}

// relaySplices counts splice calls (tests).
var relaySplices atomic.Int64

func (f *fastPath) ok() bool { return f.rc != nil }

// setup chooses h's path: the fast one when src is a plain socket, with
// splicing when dst is TCP, src is TCP or a Unix stream, and no Observe
// hook needs the bytes.
func (h *half) setup() {
	f := &h.fast
	if f.rc = RawSocket(h.src); f.rc == nil {
		return
	}
	f.h = h
	f.onRead, f.onSplice = f.readFD, f.spliceFD
	if h.observe != nil {
		return
	}
	if to, ok := h.dst.(*net.TCPConn); ok {
		switch src := h.src.(type) {
		case *net.TCPConn:
			f.to = to
		case *net.UnixConn:
			if src.LocalAddr().Network() == "unix" { // Go splices stream sockets only
				f.to, f.inqSlack = to, 1
			}
		}
		if f.to != nil {
			if f.toRC, _ = to.SyscallConn(); f.toRC == nil {
				f.to = nil
			}
		}
	}
}

func (f *fastPath) read(h *half) (n, avail int, err error) {
	f.n, f.avail, f.err = 0, 0, nil
	cb := f.onRead
	if f.to != nil {
		cb = f.onSplice
	}
	if err := f.rc.Read(cb); err != nil {
		h.putBuf()
		return 0, 0, err
	}
	if f.avail > 0 {
		if room := f.room(); room > 0 {
			return 0, min(f.avail, room), nil
		}
		// dst's send buffer is full: a splice would wait for its reader
		// holding bytes in a pipe, lost if the wait times out. Copy these
		// through a buffer, whose write sees every byte the reader takes.
		f.avail = 0
		if err := f.rc.Read(f.onRead); err != nil {
			h.putBuf()
			return 0, 0, err
		}
	}
	switch {
	case f.err != nil:
		return 0, 0, &net.OpError{Op: "read", Net: h.src.LocalAddr().Network(), Source: h.src.LocalAddr(), Addr: h.src.RemoteAddr(), Err: f.err}
	case f.n == 0:
		return 0, 0, io.EOF
	}
	h.gotBytes(f.n)
	return f.n, 0, nil
}

// readFD reads what is queued into a pooled buffer; when nothing is, it
// gives the buffer back and returns false to wait.
func (f *fastPath) readFD(fd uintptr) bool {
	h := f.h
	h.getBuf()
	for {
		n, err := unix.Read(int(fd), *h.buf)
		switch err {
		case nil:
			f.n = n
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			h.putBuf()
			return false
		default:
			f.err = os.NewSyscallError("read", err)
		}
		return true
	}
}

// spliceFD reports how many bytes are queued, for splicing; when none
// are, it reads as readFD does (an EOF, an error, or bytes that arrived
// just now), or returns false to wait.
func (f *fastPath) spliceFD(fd uintptr) bool {
	if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil && n > f.inqSlack {
		f.avail = n - f.inqSlack
		return true
	}
	return f.readFD(fd)
}

// room is how many bytes dst's send buffer takes now without waiting for
// its reader: its size less the bytes queued in it (or relaySpliceMax when
// the kernel does not say).
func (f *fastPath) room() int {
	room := relaySpliceMax
	f.toRC.Control(func(fd uintptr) {
		size, err1 := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		queued, err2 := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if err1 == nil && err2 == nil {
			room = size - queued
		}
	})
	return room
}

// splice moves n queued bytes from src to dst: (*net.TCPConn).ReadFrom
// splices from a TCP or Unix source, through a pipe taken for this call
// only.
func (f *fastPath) splice(h *half, n int) (int64, error) {
	relaySplices.Add(1)
	f.lr.R, f.lr.N = h.src, int64(n)
	return f.to.ReadFrom(&f.lr)
}

func (f *fastPath) noSplice() { f.to = nil }
