package parent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

// Backoff bounds of acceptLoop after a temporary accept error.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptLoop is the accept loop shared by Ingress.Serve and LogSink.Serve:
// it accepts until ctx ends or the listener fails, backs off on temporary
// errors, caps the connections served at once with sem, and serves each
// connection in its own goroutine.
type acceptLoop struct {
	// what names the server in errors and log lines ("ingress").
	what string
	// log receives a warning for each accept retry; nil logs nothing.
	log *slog.Logger
	// sem holds one slot per connection being served.
	sem chan struct{}
	// admit, if not nil, is called with every accepted connection before
	// it takes a slot; when ok is false the connection is closed at once
	// (the hook counts or logs it). freed says admit closed a connection
	// being served to make room for this one: if sem is full, the
	// newcomer waits for that slot instead of calling makeRoom.
	admit func(c net.Conn) (ok, freed bool)
	// makeRoom, if not nil, is called with a connection accepted while sem
	// is full. When it returns true it has closed a connection being served
	// to make room: the newcomer's goroutine waits for that slot and is
	// then served. When it returns false (or is nil) the newcomer is
	// rejected.
	makeRoom func(c net.Conn) bool
	// reject is called with a connection accepted while sem is full and
	// no room was made, just before it is closed. nil: closed silently.
	reject func(c net.Conn)
	// dropped, if not nil, is called with every connection admit let in
	// that is closed without being served (rejected at the cap, or
	// abandoned while waiting for a slot at shutdown).
	dropped func(c net.Conn)
	// admitted, if not nil, is called when a connection took a slot of
	// sem, before its serve goroutine starts; released after the slot is
	// given back. Counters of open connections use them, so that a count
	// of zero means every slot is free.
	admitted, released func()
	// serve handles one connection; it runs with a slot of sem taken and
	// must return once ctx ends. The loop does not close c.
	serve func(ctx context.Context, c net.Conn)
}

// run accepts connections on ln and serves them until ctx ends or ln fails.
// It closes ln, and returns only after every serve goroutine ended. It
// returns nil when ctx ended.
func (l *acceptLoop) run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
				if l.log != nil {
					l.log.Warn("enclavekit "+l.what+": accept failed; retrying", "err", err, "in", backoff)
				}
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil
				}
				continue
			}
			return fmt.Errorf("parent: %s accept: %w", l.what, err)
		}
		backoff = 0
		freed := false
		if l.admit != nil {
			ok, f := l.admit(c)
			if !ok {
				c.Close()
				continue
			}
			freed = f
		}
		wait := false
		select {
		case l.sem <- struct{}{}:
		default:
			if freed || (l.makeRoom != nil && l.makeRoom(c)) {
				wait = true
				break
			}
			if l.reject != nil {
				l.reject(c)
			}
			if l.dropped != nil {
				l.dropped(c)
			}
			c.Close()
			continue
		}
		if !wait && l.admitted != nil {
			l.admitted()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait {
				// The evicted connection's goroutine gives its slot back
				// as soon as its connection is closed.
				select {
				case l.sem <- struct{}{}:
				case <-ctx.Done():
					if l.dropped != nil {
						l.dropped(c)
					}
					c.Close()
					return
				}
				if l.admitted != nil {
					l.admitted()
				}
			}
			defer func() {
				<-l.sem
				if l.released != nil {
					l.released()
				}
			}()
			l.serve(ctx, c)
		}()
	}
}

// listenAndServe listens on addr and hands the listener to serve; it
// returns nil when ctx ended before the listener was set up.
func listenAndServe(ctx context.Context, addr string, serve func(context.Context, net.Listener) error) error {
	ln, err := transport.Listen(ctx, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return serve(ctx, ln)
}

// isTemporary reports accept errors worth retrying: running out of file
// descriptors or memory, and connections aborted before accept.
func isTemporary(err error) bool {
	var se *os.SyscallError
	if errors.As(err, &se) {
		type temporary interface{ Temporary() bool }
		if t, ok := se.Err.(temporary); ok && t.Temporary() {
			return true
		}
	}
	return false
}
