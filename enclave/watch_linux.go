//go:build linux

package enclave

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// readWatch is an epoll instance that watches the sockets of connections
// whose turn holder handles a lone request (see serveRequest). Each
// socket is registered once with no event enabled; arm enables EPOLLIN
// for one event (EPOLLONESHOT: epoll(7)), disarm disables it again. The
// instance is itself read through Go's poller, so waiting for it takes no
// thread.
type readWatch struct {
	f  *os.File
	rc syscall.RawConn // f's; f.Fd would make the descriptor blocking

	mu    sync.Mutex
	conns map[int32]*conn // by id, the epoll event's data
	next  int32
	done  chan struct{}
}

// newReadWatch opens the watch and starts its goroutine; close stops it.
func newReadWatch() (*readWatch, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "enclave-read-watch")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &readWatch{f: f, rc: rc, conns: make(map[int32]*conn), done: make(chan struct{})}
	go w.run()
	return w, nil
}

// close stops the watch. Call it once every connection has ended.
func (w *readWatch) close() {
	w.f.Close()
	<-w.done
}

func (w *readWatch) run() {
	defer close(w.done)
	var events [64]unix.EpollEvent
	for {
		var n int
		var werr error
		err := w.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(fd), events[:], 0)
				if werr != unix.EINTR {
					return n > 0 || werr != nil
				}
			}
		})
		if err != nil || werr != nil {
			// Closed, or an error epoll_wait(2) gives only for a bad
			// descriptor or buffer: pass every armed turn on so that no
			// connection waits for a watch that no longer runs.
			w.fail()
			return
		}
		for _, ev := range events[:n] {
			w.mu.Lock()
			c := w.conns[ev.Fd]
			w.mu.Unlock()
			if c != nil {
				c.bytesArrived()
			}
		}
	}
}

// fail passes the turns of all watched connections on and stops new arming.
func (w *readWatch) fail() {
	w.mu.Lock()
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	for _, c := range conns {
		c.bytesArrived()
	}
}

// register adds c's socket with no event enabled; on failure c.watch.rc
// stays nil and c passes its turn at once.
func (w *readWatch) register(c *conn, rc syscall.RawConn) {
	w.mu.Lock()
	if w.conns == nil {
		w.mu.Unlock()
		return
	}
	for { // ids are reused only after 2^32 connections, and never one in use
		w.next++
		if _, used := w.conns[w.next]; !used && w.next != 0 {
			break
		}
	}
	id := w.next
	w.conns[id] = c
	w.mu.Unlock()
	c.watch.rc, c.watch.id = rc, id
	if w.ctl(c, unix.EPOLL_CTL_ADD, 0) {
		return
	}
	c.watch.rc = nil
	w.mu.Lock()
	delete(w.conns, id)
	w.mu.Unlock()
}

// unregister removes c once its goroutines have ended. A socket already
// closed left the epoll instance by itself (epoll(7)).
func (w *readWatch) unregister(c *conn) {
	if c.watch.rc == nil {
		return
	}
	w.ctl(c, unix.EPOLL_CTL_DEL, 0)
	w.mu.Lock()
	if w.conns != nil {
		delete(w.conns, c.watch.id)
	}
	w.mu.Unlock()
}

// arm enables one EPOLLIN event for c's socket: it fires at once if bytes
// are waiting already.
func (w *readWatch) arm(c *conn) bool {
	w.mu.Lock()
	ok := w.conns != nil
	w.mu.Unlock()
	return ok && w.ctl(c, unix.EPOLL_CTL_MOD, unix.EPOLLIN)
}

// disarm disables c's event. EPOLLERR and EPOLLHUP cannot be disabled;
// with EPOLLONESHOT they fire at most once, and bytesArrived ignores an
// event of a disarmed connection.
func (w *readWatch) disarm(c *conn) {
	w.ctl(c, unix.EPOLL_CTL_MOD, 0)
}

// ctl runs epoll_ctl on c's descriptor and the watch's, neither of which
// can be closed meanwhile (each RawConn.Control holds its descriptor), so
// neither can name a reused descriptor. Only c's turn holder calls it (or
// unregister, once c's goroutines have ended); c.watch's functions are
// built once, so a call does not allocate.
func (w *readWatch) ctl(c *conn, op int, events uint32) bool {
	cw := &c.watch
	cw.op, cw.ev = op, unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: cw.id}
	if cw.ctl == nil {
		cw.onEpoll = func(ep uintptr) { cw.err = unix.EpollCtl(int(ep), cw.op, cw.fd, &cw.ev) }
		cw.ctl = func(fd uintptr) {
			cw.fd = int(fd)
			if err := w.rc.Control(cw.onEpoll); err != nil {
				cw.err = err // the watch is closed
			}
		}
	}
	cw.err = nil
	if err := cw.rc.Control(cw.ctl); err != nil {
		return false
	}
	return cw.err == nil
}

// watchSys is the state of a connection's epoll_ctl calls.
type watchSys struct {
	ctl     func(fd uintptr) // runs onEpoll on the watch's descriptor
	onEpoll func(ep uintptr)
	fd      int
	op      int
	ev      unix.EpollEvent
	err     error
}
