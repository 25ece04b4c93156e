package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"
)

// Pauses of Acceptor.Accept between retries: the first is AcceptBackoffMin,
// each next one twice the last, up to AcceptBackoffMax.
const (
	AcceptBackoffMin = 5 * time.Millisecond
	AcceptBackoffMax = time.Second
)

// ErrStopped is matched (errors.Is) by the error Acceptor.Accept returns
// when it stopped cleanly: its context ended or its listener was closed.
// That error is the cause (the context's error, or the listener's
// net.ErrClosed one): it reads as the cause and matches it too.
var ErrStopped = errors.New("transport: accept stopped")

// stopped is the error of a clean stop: cause, also matching ErrStopped.
type stopped struct{ cause error }

func (e *stopped) Error() string   { return e.cause.Error() }
func (e *stopped) Unwrap() []error { return []error{ErrStopped, e.cause} }

// Acceptor is the accept step of every enclavekit server: it takes
// connections from Listener, retrying the transient errors (see
// TransientAcceptError) after a pause that doubles from AcceptBackoffMin
// to AcceptBackoffMax, and logging those retries rate-limited. Set the
// fields, then call Accept from one goroutine; an Acceptor must not be
// copied after first use.
type Acceptor struct {
	// Listener is where connections come from.
	Listener net.Listener
	// Name names the server in log lines, e.g. "enclave server": a retry
	// is logged as "NAME: accept failed; retrying".
	Name string
	// Logger receives the retries as warnings, through a LogLimiter (the
	// first at once, then at most one per DefaultLogEvery with the count
	// of those held back). nil logs nothing.
	Logger *slog.Logger
	// OnError, if set, is called with every accept error other than a
	// clean stop, before it is retried or returned (for a metric).
	OnError func(err error)

	retryLog LogLimiter
}

// Accept returns the next connection. It returns an error wrapping
// ErrStopped when ctx ended or the listener was closed, and any other
// error that is not transient as it is: the listener is broken and the
// server should stop (or stop that listener). ctx bounds the pauses
// between retries; to interrupt an Accept that is waiting for a
// connection, close the listener (as servers do when their context ends).
func (a *Acceptor) Accept(ctx context.Context) (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := a.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, &stopped{ctx.Err()}
		}
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return nil, &stopped{err}
		}
		if a.OnError != nil {
			a.OnError(err)
		}
		if !TransientAcceptError(err) {
			return nil, err
		}
		backoff = min(max(2*backoff, AcceptBackoffMin), AcceptBackoffMax)
		a.retryLog.Log(ctx, a.Logger, slog.LevelWarn, a.Name+": accept failed; retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &stopped{ctx.Err()}
		case <-t.C:
		}
	}
}

// transientErrnos are the accept(2) errors that pass: running out of
// descriptors, buffers or memory (which closing connections frees), an
// interruption, and a connection that failed before it was accepted.
// The last line is what accept(2) on Linux asks a server to treat like
// EAGAIN: network errors already pending on the new connection.
var transientErrnos = []syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.EINTR, syscall.EAGAIN, syscall.EWOULDBLOCK,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.ETIMEDOUT,
	syscall.EPROTO, syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EHOSTDOWN, syscall.ENOPROTOOPT,
}

// TransientAcceptError reports whether an error of a listener's Accept is
// worth retrying: one of the errnos above (matched with errors.Is), or a
// net.Error timeout. Anything else, such as EBADF or EINVAL from a broken
// listener, is permanent.
func TransientAcceptError(err error) bool {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return false
	}
	for _, e := range transientErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
