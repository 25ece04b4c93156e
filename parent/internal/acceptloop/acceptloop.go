// Package acceptloop is the accept loop the parent's ingress
// (parent/ingress) and log sink (parent/logsink) share: it accepts through
// transport.Acceptor (the retry policy and rate-limited retry logging of
// every enclavekit server) until the context ends or the listener fails,
// caps the connections served at once, and lets its server admit, refuse
// or make room for each newcomer through hooks.
package acceptloop

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/enclavekit/enclavekit/transport"
)

// Loop is the accept loop shared by ingress.Server.Serve and
// logsink.Sink.Serve: it accepts until ctx ends or the listener fails,
// retrying transient accept errors as transport.Acceptor does, caps the
// connections served at once with Sem, and serves each connection in its
// own goroutine.
type Loop struct {
	// What names the server in errors and log lines ("ingress").
	What string
	// Log receives the accept retries as warnings, rate-limited by
	// transport.Acceptor; nil logs nothing.
	Log *slog.Logger
	// Sem holds one slot per connection being served.
	Sem chan struct{}
	// Admit, if not nil, is called with every accepted connection before
	// it takes a slot; when ok is false the connection is closed at once
	// (the hook counts or logs it). freed says Admit closed a connection
	// being served to make room for this one: if Sem is full, the
	// newcomer waits for that slot instead of calling MakeRoom.
	Admit func(c net.Conn) (ok, freed bool)
	// MakeRoom, if not nil, is called with a connection accepted while Sem
	// is full. When it returns true it has closed a connection being served
	// to make room: the newcomer's goroutine waits for that slot and is
	// then served. When it returns false (or is nil) the newcomer is
	// rejected.
	MakeRoom func(c net.Conn) bool
	// Reject is called with a connection accepted while Sem is full and
	// no room was made, just before it is closed. nil: closed silently.
	Reject func(c net.Conn)
	// Dropped, if not nil, is called with every connection Admit let in
	// that is closed without being served (rejected at the cap, or
	// abandoned while waiting for a slot at shutdown).
	Dropped func(c net.Conn)
	// Admitted, if not nil, is called when a connection took a slot of
	// Sem, before its Serve goroutine starts; Released after the slot is
	// given back. Counters of open connections use them, so that a count
	// of zero means every slot is free.
	Admitted, Released func()
	// Serve handles one connection; it runs with a slot of Sem taken and
	// must return once ctx ends. The loop does not close c.
	Serve func(ctx context.Context, c net.Conn)
}

// Run accepts connections on ln and serves them until ctx ends or ln fails.
// It closes ln, and returns only after every Serve goroutine ended. It
// returns nil when ctx ended.
func (l *Loop) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()

	acc := transport.Acceptor{Listener: ln, Name: "enclavekit " + l.What, Logger: l.Log}
	for {
		c, err := acc.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A broken listener, or one closed by someone else.
			return fmt.Errorf("parent: %s accept: %w", l.What, err)
		}
		freed := false
		if l.Admit != nil {
			ok, f := l.Admit(c)
			if !ok {
				c.Close()
				continue
			}
			freed = f
		}
		wait := false
		select {
		case l.Sem <- struct{}{}:
		default:
			if freed || (l.MakeRoom != nil && l.MakeRoom(c)) {
				wait = true
				break
			}
			if l.Reject != nil {
				l.Reject(c)
			}
			if l.Dropped != nil {
				l.Dropped(c)
			}
			c.Close()
			continue
		}
		if !wait && l.Admitted != nil {
			l.Admitted()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait {
				// The evicted connection's goroutine gives its slot back
				// as soon as its connection is closed.
				select {
				case l.Sem <- struct{}{}:
				case <-ctx.Done():
					if l.Dropped != nil {
						l.Dropped(c)
					}
					c.Close()
					return
				}
				if l.Admitted != nil {
					l.Admitted()
				}
			}
			defer func() {
				<-l.Sem
				if l.Released != nil {
					l.Released()
				}
			}()
			l.Serve(ctx, c)
		}()
	}
}

// ListenAndServe listens on addr and hands the listener to serve; it
// returns nil when ctx ended before the listener was set up.
func ListenAndServe(ctx context.Context, addr string, serve func(context.Context, net.Listener) error) error {
	ln, err := transport.Listen(ctx, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return serve(ctx, ln)
}
