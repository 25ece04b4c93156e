package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/parent/internal/acceptloop"
	"github.com/enclavekit/enclavekit/protocol/proxyproto"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults of Config.
const (
	DefaultMaxConns    = 1024
	DefaultIdleTimeout = 5 * time.Minute
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxConnsPerSource caps the connections of one source
	// address (an IPv4 address or an IPv6 /64): enough for a busy client
	// or a small NAT, a sixteenth of DefaultMaxConns.
	DefaultMaxConnsPerSource = 64
	// DefaultMinRate is the least a client must send, in bytes per
	// second over the message, while one of its messages is incomplete.
	DefaultMinRate = 1024
	// DefaultMinRateGrace is how long a message may take before
	// DefaultMinRate applies: a message of up to MinRate×grace
	// bytes may arrive at any pace within it.
	DefaultMinRateGrace = 5 * time.Second
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, and so of New.
var ErrConfig = errors.New("ingress: bad configuration")

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "ingress: bad configuration: Config.MaxConns is
// -1, negative (0 means the default, 1024)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}

// Config configures a Server. Target is required; every other zero field
// takes the default documented on it.
type Config struct {
	// Listen is where clients connect, e.g. "tcp://0.0.0.0:443". It is
	// used by ListenAndServe only (which needs it); Serve takes a listener.
	Listen string
	// Target is the enclave address each connection is forwarded to, e.g.
	// "vsock://16:443" (or "tcp://127.0.0.1:8443" in development). Required.
	Target string
	// MaxConns caps the connections forwarded at once. 0 means
	// DefaultMaxConns (1024). A connection accepted at the cap makes room:
	// the connection idle or stalled inside a message the longest is
	// closed (counted in LimitStats().EvictedConns) and the newcomer is
	// served: connections that have not completed a message yet go first,
	// one that sent a whole message and awaits the answer is the last to go.
	MaxConns int
	// MaxConnsPerSource caps the connections of one source address (an
	// IPv4 address, or an IPv6 /64). A source's connection beyond it
	// displaces that source's connection idle or stalled the longest if
	// that one has been so for at least MinRateGrace; otherwise it is
	// closed at once (LimitStats().SourceRejectedConns), before anything
	// is dialed. So one host can hold at most this many connections and
	// displace only its own. 0 means DefaultMaxConnsPerSource (64);
	// negative disables the cap.
	MaxConnsPerSource int
	// MinRate, in bytes per second, is the least a client must send while
	// one of its messages (a TLS record or an enclavekit frame; see
	// Framing) is incomplete, averaged over the message after
	// MinRateGrace; a slower client is disconnected
	// (LimitStats().SlowConns), so that trickling a few bytes now and then
	// does not hold a slot. Idle clients between messages are not affected
	// (IdleTimeout is). 0 means DefaultMinRate (1024); negative disables
	// the check.
	MinRate int64
	// MinRateGrace is the time a message may take before MinRate
	// applies. 0 means DefaultMinRateGrace (5s).
	MinRateGrace time.Duration
	// Framing says how to find message boundaries in the client's stream,
	// for MinRate and eviction: FramingAuto ("auto"; "" means it),
	// FramingTLS, FramingFrames or FramingNone. With FramingNone (or an
	// unrecognized stream under FramingAuto) there is no rate check.
	Framing string
	// RefuseAtCap restores the old policy at MaxConns: the newcomer is
	// closed at once and counted as rejected, nothing is evicted, and
	// MaxConnsPerSource is not enforced. A holder of MaxConns connections
	// then locks every other client out; leave it off.
	RefuseAtCap bool
	// IdleTimeout closes a connection on which no byte moved in either
	// direction for this long (and a write blocked for this long). 0 means
	// DefaultIdleTimeout (5m); negative disables it.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to Target. 0 means
	// DefaultDialTimeout (10s).
	DialTimeout time.Duration
	// ProxyProtocol prepends a PROXY protocol v2 header (see
	// protocol/proxyproto) to each forwarded stream, so the enclave learns
	// the client's address. The enclave side must expect it. Off (false)
	// forwards the client's bytes only.
	ProxyProtocol bool
	// Logger receives connection events. nil means slog.Default().
	Logger *slog.Logger
	// Dial connects to Target. nil means transport.Dial.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (cfg Config) Validate() error {
	if cfg.Target == "" {
		return fmt.Errorf("%w: Config.Target is required", ErrConfig)
	}
	if _, err := transport.ParseAddr(cfg.Target); err != nil {
		return fmt.Errorf("%w: Config.Target: %w", ErrConfig, err)
	}
	if cfg.Listen != "" {
		if _, err := transport.ParseAddr(cfg.Listen); err != nil {
			return fmt.Errorf("%w: Config.Listen: %w", ErrConfig, err)
		}
	}
	if cfg.MaxConns < 0 {
		return fieldErr("Config.MaxConns", cfg.MaxConns, "negative (0 means the default, %d)", DefaultMaxConns)
	}
	if cfg.DialTimeout < 0 {
		return fieldErr("Config.DialTimeout", cfg.DialTimeout, "negative (0 means the default, %v)", DefaultDialTimeout)
	}
	if cfg.MinRateGrace < 0 {
		return fieldErr("Config.MinRateGrace", cfg.MinRateGrace, "negative (0 means the default, %v)", DefaultMinRateGrace)
	}
	if _, ok := parseFraming(cfg.Framing); !ok {
		return fieldErr("Config.Framing", fmt.Sprintf("%q", cfg.Framing), "not one of %s, %s, %s, %s", FramingAuto, FramingTLS, FramingFrames, FramingNone)
	}
	return nil
}

// Stats are counters of a Server. The names are enclave.Stats' for the
// same ideas.
type Stats struct {
	OpenConns     uint64 // connections being forwarded now
	TotalConns    uint64 // connections accepted and forwarded
	RejectedConns uint64 // connections closed at once because of MaxConns (RefuseAtCap, or nothing to evict)
	FailedConns   uint64 // connections closed because Target could not be reached
}

// LimitStats count what the ingress's limits did (Server.LimitStats).
type LimitStats struct {
	EvictedConns        uint64 // connections closed to make room at MaxConns or MaxConnsPerSource
	SlowConns           uint64 // connections closed for sending a message slower than MinRate
	SourceRejectedConns uint64 // newcomers closed at once: their source was at MaxConnsPerSource with no connection to displace
}

// Server forwards TCP connections to an address in the enclave, byte for
// byte. Create it with New; run it with Serve or ListenAndServe.
type Server struct {
	cfg                           Config
	framing                       framing
	sem                           chan struct{}
	open, total, rejected, failed atomic.Int64
	evicted, slow, sourceRefused  atomic.Int64
	rejectLog, failLog, evictLog  transport.LogLimiter
	sourceLog                     transport.LogLimiter

	mu       sync.Mutex
	conns    map[*conn]struct{}            // being forwarded
	bySource map[string]map[*conn]struct{} // the same, by sourceKey
	srcCount map[string]int                // admitted and not ended nor evicted, by sourceKey
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxConnsPerSource == 0 {
		cfg.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultMinRate
	}
	if cfg.MinRateGrace == 0 {
		cfg.MinRateGrace = DefaultMinRateGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dial == nil {
		cfg.Dial = transport.Dial
	}
	fr, _ := parseFraming(cfg.Framing)
	return &Server{
		cfg: cfg, framing: fr, sem: make(chan struct{}, cfg.MaxConns),
		conns: make(map[*conn]struct{}), bySource: make(map[string]map[*conn]struct{}),
		srcCount: make(map[string]int),
	}, nil
}

// Stats returns the ingress's counters.
func (in *Server) Stats() Stats {
	return Stats{OpenConns: uint64(max(in.open.Load(), 0)), TotalConns: uint64(in.total.Load()), RejectedConns: uint64(in.rejected.Load()), FailedConns: uint64(in.failed.Load())}
}

// LimitStats returns the counters of connections the limits closed.
func (in *Server) LimitStats() LimitStats {
	return LimitStats{EvictedConns: uint64(in.evicted.Load()), SlowConns: uint64(in.slow.Load()), SourceRejectedConns: uint64(in.sourceRefused.Load())}
}

// admit applies MaxConnsPerSource to a newly accepted connection, before
// it takes a slot: at the cap, the source's lowest ranked connection is
// evicted if it has been idle or stalled for MinRateGrace, else c is
// refused. An admitted connection is counted for its source until it
// ends (forgetSource) or is evicted.
func (in *Server) admit(c net.Conn) (ok, freed bool) {
	src := sourceKey(c.RemoteAddr())
	in.mu.Lock()
	var victim *conn
	if !in.cfg.RefuseAtCap && in.cfg.MaxConnsPerSource > 0 && in.srcCount[src] >= in.cfg.MaxConnsPerSource {
		victim = pickVictim(mapKeys(in.bySource[src]))
		if victim != nil {
			tier, since, _ := victim.rank()
			if tier == tierBusy || time.Since(time.Unix(0, since)) < in.cfg.MinRateGrace {
				victim = nil
			}
		}
		if victim == nil {
			in.mu.Unlock()
			n := in.sourceRefused.Add(1)
			in.sourceLog.Log(context.Background(), in.cfg.Logger, slog.LevelWarn, "enclavekit ingress: per-source connection cap reached; closing the source's new connections",
				"client", c.RemoteAddr().String(), "max_conns_per_source", in.cfg.MaxConnsPerSource, "source_refused_total", n)
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
func (in *Server) forgetSource(src string) {
	in.mu.Lock()
	in.forgetSourceLocked(src)
	in.mu.Unlock()
}

func (in *Server) forgetSourceLocked(src string) {
	if in.srcCount[src]--; in.srcCount[src] <= 0 {
		delete(in.srcCount, src)
	}
}

// evictedLocked marks ic as being evicted; it no longer counts for its
// source.
func (in *Server) evictedLocked(ic *conn) {
	ic.evicted = true
	in.forgetSourceLocked(ic.source)
}

// makeRoom evicts the lowest ranked connection (see conn.rank) for
// c, accepted at MaxConns. It reports whether it did.
func (in *Server) makeRoom(c net.Conn) bool {
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

func (in *Server) evict(victim *conn, why string) {
	n := in.evicted.Add(1)
	victim.client.Close()
	in.evictLog.Log(context.Background(), in.cfg.Logger, slog.LevelWarn, "enclavekit ingress: "+why+"; closed the connection idle or stalled the longest to make room",
		"evicted_client", victim.client.RemoteAddr().String(), "max_conns", in.cfg.MaxConns,
		"max_conns_per_source", in.cfg.MaxConnsPerSource, "evicted_total", n)
}

// register adds ic, admitted by admit, to the live connections; the
// returned func removes it and ends its count for its source.
func (in *Server) register(ic *conn) (unregister func()) {
	in.mu.Lock()
	in.conns[ic] = struct{}{}
	same := in.bySource[ic.source]
	if same == nil {
		same = make(map[*conn]struct{})
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

func mapKeys(m map[*conn]struct{}) func(yield func(*conn) bool) {
	return func(yield func(*conn) bool) {
		for ic := range m {
			if !yield(ic) {
				return
			}
		}
	}
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends; it
// returns nil when ctx ended.
func (in *Server) ListenAndServe(ctx context.Context) error {
	if in.cfg.Listen == "" {
		return errors.New("ingress: Config.Listen is required by ListenAndServe")
	}
	return acceptloop.ListenAndServe(ctx, in.cfg.Listen, in.Serve)
}

// Serve accepts connections on ln and forwards them until ctx ends or ln
// fails. It closes ln, and when it returns every forwarded connection is
// closed and its goroutines have ended. It returns nil when ctx ended.
func (in *Server) Serve(ctx context.Context, ln net.Listener) error {
	l := acceptloop.Loop{
		What:     "ingress",
		Log:      in.cfg.Logger,
		Sem:      in.sem,
		Admit:    in.admit,
		MakeRoom: in.makeRoom,
		Dropped:  func(c net.Conn) { in.forgetSource(sourceKey(c.RemoteAddr())) },
		Reject: func(c net.Conn) {
			n := in.rejected.Add(1)
			in.rejectLog.Log(ctx, in.cfg.Logger, slog.LevelWarn, "enclavekit ingress: connection cap reached; closing new connections",
				"client", c.RemoteAddr().String(), "max_conns", in.cfg.MaxConns, "rejected_total", n)
		},
		Admitted: func() { in.open.Add(1) },
		Released: func() { in.open.Add(-1) },
		Serve:    in.handle,
	}
	return l.Run(ctx, ln)
}

// handle forwards one client connection to the enclave through a
// transport.Relay: the client's bytes are watched for message boundaries
// (Observe), MinRate is its read deadline (ReadDeadline), and its
// Activity ranks the connection for eviction.
func (in *Server) handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	ic := &conn{client: client, source: sourceKey(client.RemoteAddr()), created: time.Now(),
		relay: &transport.Relay{Idle: max(in.cfg.IdleTimeout, 0)}, watch: &recordWatch{mode: in.framing}}
	if in.framing != framingNone {
		ic.relay.Observe = ic.watch.feed
		if minRate, grace := in.cfg.MinRate, in.cfg.MinRateGrace; minRate > 0 {
			ic.relay.ReadDeadline = func() time.Time { return ic.watch.rateDeadline(minRate, grace) }
		}
	}
	defer in.register(ic)()
	dctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	enclave, err := in.cfg.Dial(dctx, in.cfg.Target)
	cancel()
	if err != nil {
		n := in.failed.Add(1)
		in.failLog.Log(ctx, in.cfg.Logger, slog.LevelWarn, "enclavekit ingress: cannot reach the enclave",
			"target", in.cfg.Target, "client", client.RemoteAddr().String(), "err", err, "failed_total", n)
		return
	}
	defer enclave.Close()
	in.total.Add(1)
	if in.cfg.ProxyProtocol {
		ic.relay.Prefix = proxyproto.Append(nil, client.RemoteAddr(), client.LocalAddr())
	}
	if _, _, err := ic.relay.Run(ctx, client, enclave); errors.Is(err, transport.ErrReadDeadline) {
		in.slow.Add(1) // trickling inside a message
	}
}
