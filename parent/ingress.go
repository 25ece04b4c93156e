package parent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

// Defaults of IngressConfig.
const (
	DefaultIngressMaxConns    = 1024
	DefaultIngressIdleTimeout = 5 * time.Minute
	DefaultIngressDialTimeout = 10 * time.Second
)

// IngressConfig configures an Ingress.
type IngressConfig struct {
	// Listen is where clients connect, e.g. "tcp://0.0.0.0:443". It is
	// used by ListenAndServe only; Serve takes a listener.
	Listen string
	// Target is the enclave address each connection is forwarded to, e.g.
	// "vsock://16:443" (or "tcp://127.0.0.1:8443" in development). Required.
	Target string
	// MaxConns caps the connections forwarded at once; a connection
	// accepted beyond it is closed at once and counted as rejected.
	// 0 means DefaultIngressMaxConns.
	MaxConns int
	// IdleTimeout closes a connection on which no byte moved in either
	// direction for this long (and a write blocked for this long). 0 means
	// DefaultIngressIdleTimeout; negative disables it.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to Target. 0 means
	// DefaultIngressDialTimeout.
	DialTimeout time.Duration
	// ProxyProtocol prepends a PROXY protocol v2 header (see
	// AppendProxyHeaderV2) to each forwarded stream, so the enclave learns
	// the client's address. The enclave side must expect it.
	ProxyProtocol bool
	// Logger receives connection events. nil means slog.Default().
	Logger *slog.Logger
	// Dialer connects to Target. nil means transport.Dial.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Validate reports whether cfg is usable.
func (cfg IngressConfig) Validate() error {
	if cfg.Target == "" {
		return errors.New("parent: IngressConfig.Target is required")
	}
	if _, err := transport.ParseAddr(cfg.Target); err != nil {
		return fmt.Errorf("parent: IngressConfig.Target: %w", err)
	}
	if cfg.Listen != "" {
		if _, err := transport.ParseAddr(cfg.Listen); err != nil {
			return fmt.Errorf("parent: IngressConfig.Listen: %w", err)
		}
	}
	if cfg.MaxConns < 0 {
		return fmt.Errorf("parent: IngressConfig.MaxConns %d is negative", cfg.MaxConns)
	}
	if cfg.DialTimeout < 0 {
		return fmt.Errorf("parent: IngressConfig.DialTimeout %v is negative", cfg.DialTimeout)
	}
	return nil
}

// IngressStats are counters of an Ingress.
type IngressStats struct {
	Open     int64 // connections being forwarded now
	Total    int64 // connections accepted and forwarded
	Rejected int64 // connections closed at once because of MaxConns
	Failed   int64 // connections closed because Target could not be reached
}

// Ingress forwards TCP connections to an address in the enclave, byte for
// byte. Create it with NewIngress; run it with Serve or ListenAndServe.
type Ingress struct {
	cfg                           IngressConfig
	sem                           chan struct{}
	open, total, rejected, failed atomic.Int64
	rejectLog, failLog            logLimiter
}

// logLimiter lets one warning through per interval, so that a flood of
// rejected connections does not flood the log.
type logLimiter struct{ last atomic.Int64 }

const logLimitInterval = 10 * time.Second

func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return (last == 0 || now-last >= int64(logLimitInterval)) && l.last.CompareAndSwap(last, now)
}

// NewIngress validates cfg and returns an Ingress.
func NewIngress(cfg IngressConfig) (*Ingress, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultIngressMaxConns
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIngressIdleTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultIngressDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dialer == nil {
		cfg.Dialer = transport.Dial
	}
	return &Ingress{cfg: cfg, sem: make(chan struct{}, cfg.MaxConns)}, nil
}

// Stats returns the ingress's counters.
func (in *Ingress) Stats() IngressStats {
	return IngressStats{Open: in.open.Load(), Total: in.total.Load(), Rejected: in.rejected.Load(), Failed: in.failed.Load()}
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends; it
// returns nil when ctx ended.
func (in *Ingress) ListenAndServe(ctx context.Context) error {
	if in.cfg.Listen == "" {
		return errors.New("parent: IngressConfig.Listen is required by ListenAndServe")
	}
	return listenAndServe(ctx, in.cfg.Listen, in.Serve)
}

// Serve accepts connections on ln and forwards them until ctx ends or ln
// fails. It closes ln, and when it returns every forwarded connection is
// closed and its goroutines have ended. It returns nil when ctx ended.
func (in *Ingress) Serve(ctx context.Context, ln net.Listener) error {
	l := acceptLoop{
		what: "ingress",
		log:  in.cfg.Logger,
		sem:  in.sem,
		reject: func(c net.Conn) {
			n := in.rejected.Add(1)
			if in.rejectLog.allow() {
				in.cfg.Logger.Warn("enclavekit ingress: connection cap reached; closing new connections", "client", c.RemoteAddr().String(), "max_conns", in.cfg.MaxConns, "rejected_total", n)
			}
		},
		admitted: func() { in.open.Add(1) },
		released: func() { in.open.Add(-1) },
		serve:    in.handle,
	}
	return l.run(ctx, ln)
}

func (in *Ingress) handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	dctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	enclave, err := in.cfg.Dialer(dctx, in.cfg.Target)
	cancel()
	if err != nil {
		n := in.failed.Add(1)
		if in.failLog.allow() {
			in.cfg.Logger.Warn("enclavekit ingress: cannot reach the enclave", "target", in.cfg.Target, "client", client.RemoteAddr().String(), "err", err, "failed_total", n)
		}
		return
	}
	defer enclave.Close()
	in.total.Add(1)
	var hdr []byte
	if in.cfg.ProxyProtocol {
		hdr = AppendProxyHeaderV2(nil, client.RemoteAddr(), client.LocalAddr())
	}
	Splice(ctx, client, enclave, hdr, in.cfg.IdleTimeout)
}

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
	s := &splice{idle: idle, a: a, b: b}
	s.touch()
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
	for {
		// Deadlines first, then the abort check: abort sets the flag before
		// its past deadlines, so either this sees the flag or abort's
		// deadline overrides the one set here.
		if s.idle > 0 {
			src.SetReadDeadline(time.Unix(0, s.last.Load()).Add(s.idle))
		}
		if s.aborted.Load() {
			return n
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			s.touch()
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
		if errors.As(rerr, &ne) && ne.Timeout() && !s.aborted.Load() &&
			time.Since(time.Unix(0, s.last.Load())) < s.idle {
			continue // the other direction moved bytes: not idle yet
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
