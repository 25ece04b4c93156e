package ingress

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeWriter is implemented by TCP, Unix and vsock connections.
type closeWriter interface{ CloseWrite() error }

// Splice copies a to b and b to a until both directions ended, then
// returns (it does not close a or b). prefix is written to b before
// anything else. When one side's reads end (EOF), the other side is
// half-closed (CloseWrite) if it supports it, and the copy the other way
// goes on; without CloseWrite, the end of one direction ends both. With
// idle > 0, Splice gives up when no byte moved in either direction for
// idle, or a write was blocked for idle. When it gives up, on an error, or
// when ctx ends, it unblocks both copies by setting past deadlines on a and
// b, so the caller's Close does the rest. It returns the bytes copied each
// way (prefix not included).
func Splice(ctx context.Context, a, b net.Conn, prefix []byte, idle time.Duration) (aToB, bToA int64) {
	return newSplice(a, b, idle).run(ctx, prefix)
}

func newSplice(a, b net.Conn, idle time.Duration) *splice {
	s := &splice{idle: idle, a: a, b: b}
	s.touch()
	return s
}

// run is Splice on s.
func (s *splice) run(ctx context.Context, prefix []byte) (aToB, bToA int64) {
	a, b, idle := s.a, s.b, s.idle
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()
	if len(prefix) > 0 {
		if idle > 0 {
			b.SetWriteDeadline(time.Now().Add(idle))
		}
		if s.aborted.Load() {
			return 0, 0
		}
		if _, err := b.Write(prefix); err != nil {
			return 0, 0
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA = s.copy(a, b)
	}()
	aToB = s.copy(b, a)
	wg.Wait()
	return aToB, bToA
}

type splice struct {
	idle    time.Duration
	a, b    net.Conn
	last    atomic.Int64 // unix nanos of the last byte moved
	aborted atomic.Bool

	// The ingress's own splices only: a's messages are watched, and a
	// must send at least minRate bytes/s while one is incomplete (after
	// grace); slow is set when it did not.
	watch           *recordWatch
	minRate         int64
	grace           time.Duration
	slow            atomic.Bool
	lastUp, lastDwn atomic.Int64 // unix nanos of the last byte a→b, b→a
}

func (s *splice) touch() { s.last.Store(time.Now().UnixNano()) }

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy moves bytes from src to dst until src ends or an error; then it
// half-closes dst (or, on error, aborts the whole splice).
func (s *splice) copy(dst, src net.Conn) int64 {
	bp := spliceBufs.Get().(*[]byte)
	defer spliceBufs.Put(bp)
	buf := *bp
	var n int64
	up := src == s.a
	watch := s.watch
	if !up {
		watch = nil
	}
	for {
		// Deadlines first, then the abort check: abort sets the flag before
		// its past deadlines, so either this sees the flag or abort's
		// deadline overrides the one set here.
		if s.idle > 0 || watch != nil {
			var d time.Time
			if s.idle > 0 {
				d = time.Unix(0, s.last.Load()).Add(s.idle)
			}
			if watch != nil {
				if rd := watch.rateDeadline(s.minRate, s.grace); !rd.IsZero() && (d.IsZero() || rd.Before(d)) {
					d = rd
				}
			}
			src.SetReadDeadline(d)
		}
		if s.aborted.Load() {
			return n
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			s.touch()
			now := time.Now()
			if up {
				s.lastUp.Store(now.UnixNano())
				if watch != nil {
					watch.feed(buf[:nr], now)
				}
			} else {
				s.lastDwn.Store(now.UnixNano())
			}
			if s.idle > 0 {
				dst.SetWriteDeadline(time.Now().Add(s.idle))
			}
			if s.aborted.Load() {
				return n
			}
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				s.abort()
				return n
			}
			s.touch()
		}
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			} else {
				// Without half-close, the end of one direction ends both.
				s.abort()
			}
			return n
		}
		var ne net.Error
		if errors.As(rerr, &ne) && ne.Timeout() && !s.aborted.Load() {
			if watch != nil {
				if rd := watch.rateDeadline(s.minRate, s.grace); !rd.IsZero() && !time.Now().Before(rd) {
					s.slow.Store(true) // trickling inside a message
					s.abort()
					return n
				}
			}
			if s.idle <= 0 || time.Since(time.Unix(0, s.last.Load())) < s.idle {
				continue // the other direction moved bytes: not idle yet
			}
		}
		s.abort()
		return n
	}
}

// abort makes every blocked read and write of the splice return.
func (s *splice) abort() {
	if s.aborted.Swap(true) {
		return
	}
	past := time.Unix(1, 0)
	s.a.SetDeadline(past)
	s.b.SetDeadline(past)
}
