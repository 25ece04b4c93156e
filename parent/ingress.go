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

	"github.com/enclavekit/enclavekit/protocol/proxyproto"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults of IngressConfig.
const (
	DefaultIngressMaxConns    = 1024
	DefaultIngressIdleTimeout = 5 * time.Minute
	DefaultIngressDialTimeout = 10 * time.Second
	// DefaultIngressMaxConnsPerSource caps the connections of one source
	// address (an IPv4 address or an IPv6 /64): enough for a busy client
	// or a small NAT, a sixteenth of DefaultIngressMaxConns.
	DefaultIngressMaxConnsPerSource = 64
	// DefaultIngressMinRate is the least a client must send, in bytes per
	// second over the message, while one of its messages is incomplete.
	DefaultIngressMinRate = 1024
	// DefaultIngressMinRateGrace is how long a message may take before
	// DefaultIngressMinRate applies: a message of up to MinRate×grace
	// bytes may arrive at any pace within it.
	DefaultIngressMinRateGrace = 5 * time.Second
)

// IngressConfig configures an Ingress.
type IngressConfig struct {
	// Listen is where clients connect, e.g. "tcp://0.0.0.0:443". It is
	// used by ListenAndServe only; Serve takes a listener.
	Listen string
	// Target is the enclave address each connection is forwarded to, e.g.
	// "vsock://16:443" (or "tcp://127.0.0.1:8443" in development). Required.
	Target string
	// MaxConns caps the connections forwarded at once. 0 means
	// DefaultIngressMaxConns. A connection accepted at the cap makes room:
	// the connection idle or stalled inside a message the longest is
	// closed (counted in LimitStats().Evicted) and the newcomer is served:
	// connections that have not completed a message yet go first, one
	// that sent a whole message and awaits the answer is the last to go.
	MaxConns int
	// MaxConnsPerSource caps the connections of one source address (an
	// IPv4 address, or an IPv6 /64). A source's connection beyond it
	// displaces that source's connection idle or stalled the longest if
	// that one has been so for at least MinRateGrace; otherwise it is
	// closed at once (LimitStats().SourceRefused), before anything is
	// dialed. So one host can hold at most this many connections and
	// displace only its own. 0 means DefaultIngressMaxConnsPerSource;
	// negative disables the cap.
	MaxConnsPerSource int
	// MinRate, in bytes per second, is the least a client must send while
	// one of its messages (a TLS record or an enclavekit frame; see
	// Framing) is incomplete, averaged over the message after
	// MinRateGrace; a slower client is disconnected (LimitStats().Slow), so that
	// trickling a few bytes now and then does not hold a slot. Idle
	// clients between messages are not affected (IdleTimeout is). 0 means
	// DefaultIngressMinRate; negative disables the check.
	MinRate int64
	// MinRateGrace is the time a message may take before MinRate
	// applies. 0 means DefaultIngressMinRateGrace.
	MinRateGrace time.Duration
	// Framing says how to find message boundaries in the client's stream,
	// for MinRate and eviction: FramingAuto (default, ""), FramingTLS,
	// FramingFrames or FramingNone. With FramingNone (or an unrecognized
	// stream under FramingAuto) there is no rate check.
	Framing string
	// RefuseAtCap restores the old policy at MaxConns: the newcomer is
	// closed at once and counted as rejected, nothing is evicted, and
	// MaxConnsPerSource is not enforced. A holder of MaxConns connections
	// then locks every other client out; leave it off.
	RefuseAtCap bool
	// IdleTimeout closes a connection on which no byte moved in either
	// direction for this long (and a write blocked for this long). 0 means
	// DefaultIngressIdleTimeout; negative disables it.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to Target. 0 means
	// DefaultIngressDialTimeout.
	DialTimeout time.Duration
	// ProxyProtocol prepends a PROXY protocol v2 header (see
	// protocol/proxyproto) to each forwarded stream, so the enclave learns
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
	if cfg.MinRateGrace < 0 {
		return fmt.Errorf("parent: IngressConfig.MinRateGrace %v is negative; want a duration, or 0 for the default of %v", cfg.MinRateGrace, DefaultIngressMinRateGrace)
	}
	if _, ok := parseFraming(cfg.Framing); !ok {
		return fmt.Errorf("parent: IngressConfig.Framing %q is not one of auto, tls, frames, none", cfg.Framing)
	}
	return nil
}

// IngressStats are counters of an Ingress.
type IngressStats struct {
	Open     int64 // connections being forwarded now
	Total    int64 // connections accepted and forwarded
	Rejected int64 // connections closed at once because of MaxConns (RefuseAtCap, or nothing to evict)
	Failed   int64 // connections closed because Target could not be reached
}

// IngressLimitStats count what the ingress's limits did (Ingress.LimitStats).
type IngressLimitStats struct {
	Evicted       int64 // connections closed to make room at MaxConns or MaxConnsPerSource
	Slow          int64 // connections closed for sending a message slower than MinRate
	SourceRefused int64 // newcomers closed at once: their source was at MaxConnsPerSource with no connection to displace
}

// Ingress forwards TCP connections to an address in the enclave, byte for
// byte. Create it with NewIngress; run it with Serve or ListenAndServe.
type Ingress struct {
	cfg                           IngressConfig
	framing                       framing
	sem                           chan struct{}
	open, total, rejected, failed atomic.Int64
	evicted, slow, sourceRefused  atomic.Int64
	rejectLog, failLog, evictLog  logLimiter
	sourceLog                     logLimiter

	mu       sync.Mutex
	conns    map[*ingressConn]struct{}            // being forwarded
	bySource map[string]map[*ingressConn]struct{} // the same, by sourceKey
	srcCount map[string]int                       // admitted and not ended nor evicted, by sourceKey
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
	if cfg.MaxConnsPerSource == 0 {
		cfg.MaxConnsPerSource = DefaultIngressMaxConnsPerSource
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultIngressMinRate
	}
	if cfg.MinRateGrace == 0 {
		cfg.MinRateGrace = DefaultIngressMinRateGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dialer == nil {
		cfg.Dialer = transport.Dial
	}
	fr, _ := parseFraming(cfg.Framing)
	return &Ingress{
		cfg: cfg, framing: fr, sem: make(chan struct{}, cfg.MaxConns),
		conns: make(map[*ingressConn]struct{}), bySource: make(map[string]map[*ingressConn]struct{}),
		srcCount: make(map[string]int),
	}, nil
}

// Stats returns the ingress's counters.
func (in *Ingress) Stats() IngressStats {
	return IngressStats{Open: in.open.Load(), Total: in.total.Load(), Rejected: in.rejected.Load(), Failed: in.failed.Load()}
}

// LimitStats returns the counters of connections the limits closed.
func (in *Ingress) LimitStats() IngressLimitStats {
	return IngressLimitStats{Evicted: in.evicted.Load(), Slow: in.slow.Load(), SourceRefused: in.sourceRefused.Load()}
}

// admit applies MaxConnsPerSource to a newly accepted connection, before
// it takes a slot: at the cap, the source's lowest ranked connection is
// evicted if it has been idle or stalled for MinRateGrace, else c is
// refused. An admitted connection is counted for its source until it
// ends (forgetSource) or is evicted.
func (in *Ingress) admit(c net.Conn) (ok, freed bool) {
	src := sourceKey(c.RemoteAddr())
	in.mu.Lock()
	var victim *ingressConn
	if !in.cfg.RefuseAtCap && in.cfg.MaxConnsPerSource > 0 && in.srcCount[src] >= in.cfg.MaxConnsPerSource {
		victim = pickVictim(mapKeys(in.bySource[src]))
		if victim != nil {
			tier, since, _ := victim.rank()
			if tier == ingressTierBusy || time.Since(time.Unix(0, since)) < in.cfg.MinRateGrace {
				victim = nil
			}
		}
		if victim == nil {
			in.mu.Unlock()
			n := in.sourceRefused.Add(1)
			if in.sourceLog.allow() {
				in.cfg.Logger.Warn("enclavekit ingress: per-source connection cap reached; closing the source's new connections",
					"client", c.RemoteAddr().String(), "max_conns_per_source", in.cfg.MaxConnsPerSource, "source_refused_total", n)
			}
			return false, false
		}
		in.evictedLocked(victim)
	}
	in.srcCount[src]++
	in.mu.Unlock()
	if victim != nil {
		in.evict(victim, "per-source connection cap reached")
	}
	return true, victim != nil
}

// forgetSource undoes admit's count for a connection that ends or is
// closed without being served.
func (in *Ingress) forgetSource(src string) {
	in.mu.Lock()
	in.forgetSourceLocked(src)
	in.mu.Unlock()
}

func (in *Ingress) forgetSourceLocked(src string) {
	if in.srcCount[src]--; in.srcCount[src] <= 0 {
		delete(in.srcCount, src)
	}
}

// evictedLocked marks ic as being evicted; it no longer counts for its
// source.
func (in *Ingress) evictedLocked(ic *ingressConn) {
	ic.evicted = true
	in.forgetSourceLocked(ic.source)
}

// makeRoom evicts the lowest ranked connection (see ingressConn.rank) for
// c, accepted at MaxConns. It reports whether it did.
func (in *Ingress) makeRoom(c net.Conn) bool {
	if in.cfg.RefuseAtCap {
		return false
	}
	in.mu.Lock()
	victim := pickVictim(mapKeys(in.conns))
	if victim != nil {
		in.evictedLocked(victim)
	}
	in.mu.Unlock()
	if victim == nil {
		return false
	}
	in.evict(victim, "connection cap reached")
	return true
}

func (in *Ingress) evict(victim *ingressConn, why string) {
	n := in.evicted.Add(1)
	victim.client.Close()
	if in.evictLog.allow() {
		in.cfg.Logger.Warn("enclavekit ingress: "+why+"; closed the connection idle or stalled the longest to make room",
			"evicted_client", victim.client.RemoteAddr().String(), "max_conns", in.cfg.MaxConns,
			"max_conns_per_source", in.cfg.MaxConnsPerSource, "evicted_total", n)
	}
}

// register adds ic, admitted by admit, to the live connections; the
// returned func removes it and ends its count for its source.
func (in *Ingress) register(ic *ingressConn) (unregister func()) {
	in.mu.Lock()
	in.conns[ic] = struct{}{}
	same := in.bySource[ic.source]
	if same == nil {
		same = make(map[*ingressConn]struct{})
		in.bySource[ic.source] = same
	}
	same[ic] = struct{}{}
	in.mu.Unlock()
	return func() {
		in.mu.Lock()
		delete(in.conns, ic)
		delete(same, ic)
		if len(same) == 0 {
			delete(in.bySource, ic.source)
		}
		if !ic.evicted {
			in.forgetSourceLocked(ic.source)
		}
		in.mu.Unlock()
	}
}

func mapKeys(m map[*ingressConn]struct{}) func(yield func(*ingressConn) bool) {
	return func(yield func(*ingressConn) bool) {
		for ic := range m {
			if !yield(ic) {
				return
			}
		}
	}
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
		what:     "ingress",
		log:      in.cfg.Logger,
		sem:      in.sem,
		admit:    in.admit,
		makeRoom: in.makeRoom,
		dropped:  func(c net.Conn) { in.forgetSource(sourceKey(c.RemoteAddr())) },
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
	sp := newSplice(client, nil, in.cfg.IdleTimeout)
	sp.watch = &recordWatch{mode: in.framing}
	sp.minRate, sp.grace = in.cfg.MinRate, in.cfg.MinRateGrace
	ic := &ingressConn{client: client, source: sourceKey(client.RemoteAddr()), sp: sp, watch: sp.watch}
	defer in.register(ic)()
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
		hdr = proxyproto.Append(nil, client.RemoteAddr(), client.LocalAddr())
	}
	sp.b = enclave
	sp.run(ctx, hdr)
	if sp.slow.Load() {
		in.slow.Add(1)
	}
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

	// Ingress only: a's messages are watched, and a must send at least
	// minRate bytes/s while one is incomplete (after grace); slow is set
	// when it did not.
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
