package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// bufSize is the size of the pooled copy buffers every copy starts
	// with.
	bufSize = 64 << 10
	// bigBufSize is the size a buffered copy grows to while its source
	// keeps filling whole buffers (a bulk stream): fewer, larger reads and
	// writes mean fewer wakeups and syscalls per byte, which is what a
	// relay on a small instance is short of. A 64 KiB buffer moved about
	// half the bytes per second of a 1 MiB one in BenchmarkThroughput.
	bigBufSize = 1 << 20
	// maxBigBufs bounds the memory held in big buffers (64 MiB): a copy
	// that finds none free keeps its small buffer.
	maxBigBufs = 64
	// spliceChunk is how much one splice call may move before the byte
	// counters are updated.
	spliceChunk = 4 << 20
	// flushBytes is how many bytes a copy moves between updates of the
	// byte counters.
	flushBytes = 1 << 20
)

var (
	bufPool    = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	bigBufPool = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}
	// bigBufs holds one token per big buffer in use.
	bigBufs = make(chan struct{}, maxBigBufs)
)

// errIdle is returned by relay when the idle timeout closed the connection.
var errIdle = errors.New("proxy: idle timeout")

// flow is one proxied connection pair: activity clock and idle watchdog.
type flow struct {
	start time.Time
	last  atomic.Int64 // time.Since(start) at the last activity, in ns
	idle  time.Duration
	idled atomic.Bool
	timer *time.Timer
	close func()
}

func (f *flow) touch() { f.last.Store(int64(time.Since(f.start))) }

// check runs when the watchdog timer fires: it closes both conns if nothing
// moved for f.idle, or re-arms for the remaining time.
func (f *flow) check() {
	since := time.Since(f.start) - time.Duration(f.last.Load())
	if since >= f.idle {
		f.idled.Store(true)
		f.close()
		return
	}
	f.timer.Reset(f.idle - since)
}

// relay copies between a (the enclave side) and b (the destination) in both
// directions at once until both directions reached EOF or one failed, then
// closes both. EOF in one direction is passed on with CloseWrite (half
// close), so request/response protocols that shut down their sending side
// keep working. up/down count bytes a→b and b→a as they move. idle > 0
// closes the pair after that long without a byte moving either way.
func relay(a, b net.Conn, idle time.Duration, up, down func(int64)) error {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	f := &flow{start: time.Now(), idle: idle, close: closeBoth}
	if idle > 0 {
		f.timer = time.AfterFunc(idle, f.check)
		defer f.timer.Stop()
	}
	errc := make(chan error, 1)
	go func() {
		err := f.pipe(b, a, up)
		if err != nil {
			closeBoth()
		}
		errc <- err
	}()
	err := f.pipe(a, b, down)
	if err != nil {
		closeBoth()
	}
	err2 := <-errc
	closeBoth()
	if f.idled.Load() {
		return errIdle
	}
	for _, e := range []error{err, err2} {
		// net.ErrClosed: closed by the other direction or by a drain.
		if e != nil && !errors.Is(e, net.ErrClosed) {
			return e
		}
	}
	return nil
}

// pipe copies src to dst until EOF, then half-closes dst.
func (f *flow) pipe(dst, src net.Conn, count func(int64)) error {
	var err error
	if canSplice(dst, src) {
		err = f.spliceCopy(dst, src, count)
	} else {
		err = f.bufCopy(dst, src, count)
	}
	if err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
	// No half close on this conn type: a full close is the only way to
	// pass the EOF on.
	return dst.Close()
}

// canSplice reports whether the kernel can move bytes from src to dst
// without copying them through user space: Go's net package splices
// between TCP and Unix sockets on Linux (io.Copy into a *net.TCPConn from
// one) and falls back to a copy elsewhere.
func canSplice(dst, src net.Conn) bool {
	switch dst.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return false
	}
	switch src.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// spliceCopy is the zero-copy path: (*net.TCPConn).ReadFrom with a TCP or
// Unix source uses splice(2) on Linux. The kernel does the copy inside
// ReadFrom, so to see progress on a stream slower than a chunk per idle
// period, a read deadline of idle/4 interrupts the splice now and then
// (it is re-armed only when it fires), and any bytes moved count as
// activity; the watchdog then closes the pair between IdleTimeout and
// 1.25×IdleTimeout after the last byte.
func (f *flow) spliceCopy(dst, src net.Conn, count func(int64)) error {
	rf := dst.(io.ReaderFrom)
	tick := f.idle / 4
	arm := func() {
		if tick > 0 {
			src.SetReadDeadline(time.Now().Add(tick))
		}
	}
	arm()
	lr := &io.LimitedReader{}
	for {
		lr.R, lr.N = src, spliceChunk
		n, err := rf.ReadFrom(lr)
		if n > 0 {
			f.touch()
			count(n)
		}
		if err == nil {
			if n < spliceChunk {
				return nil // EOF
			}
			continue
		}
		if tick > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !f.idled.Load() {
			arm()
			continue
		}
		return err
	}
}

// bufCopy copies through a pooled buffer where the kernel cannot splice:
// vsock↔TCP in production (Go never splices vsock), and any wrapped conn.
// (On the 2-vCPU VM this was measured on, 1 MiB reads and writes moved
// about as many bytes per second as splice between two TCP conns, 3.3–3.6
// against 2.9–3.4 GB/s, but at the cost of copying through user space;
// splice stays for TCP↔TCP, the zero-copy path.) It starts with a bufSize buffer, so that the many quiet
// connections a proxy holds cost little, and switches to a bigBufSize one
// (when one of the maxBigBufs is free) as soon as a read fills the whole
// buffer, that is while the source has more queued than the buffer holds;
// it goes back to the small one when a read returns less than bufSize.
func (f *flow) bufCopy(dst, src net.Conn, count func(int64)) error {
	bp, big := bufPool.Get().(*[]byte), false
	release := func() {
		if big {
			bigBufPool.Put(bp)
			<-bigBufs
		} else {
			bufPool.Put(bp)
		}
	}
	var pending int64
	defer func() {
		if pending > 0 {
			count(pending)
		}
		release()
	}()
	for {
		buf := *bp
		n, rerr := src.Read(buf)
		if n > 0 {
			nw, werr := dst.Write(buf[:n])
			if nw > 0 {
				f.touch()
				pending += int64(nw)
				if pending >= flushBytes {
					count(pending)
					pending = 0
				}
			}
			if werr != nil {
				return werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
		switch {
		case !big && n == len(buf):
			select {
			case bigBufs <- struct{}{}:
				release()
				bp, big = bigBufPool.Get().(*[]byte), true
			default: // all big buffers in use: stay small
			}
		case big && n < bufSize:
			release()
			bp, big = bufPool.Get().(*[]byte), false
		}
	}
}
