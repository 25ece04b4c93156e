package logsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/parent/internal/acceptloop"
	"github.com/enclavekit/enclavekit/parent/internal/sanitize"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults and limits of Config.
const (
	DefaultListen       = "vsock://any:5001"
	DefaultMaxFrameSize = 64 << 10
	DefaultMaxAttrs     = 32
	DefaultMaxMessage   = 4 << 10
	DefaultMaxValue     = 1 << 10
	DefaultMaxConns     = 8
	// DefaultMaxConnsPerCID allows an enclave its stream and, while a
	// restart's stale connection is not yet gone, a second one.
	DefaultMaxConnsPerCID = 2
	logReceivedKey        = "received"
	maxLogKey             = 128
	minLogLevel           = slog.LevelDebug - 4
	maxLogLevel           = slog.LevelError + 4
	logAttrGroup          = "attrs"
	logEnclaveKey         = "enclave"
	logDroppedKey         = "enclave_dropped"
	logTruncatedAttrsKey  = "enclave_attrs_truncated"
)

// ErrBadRecord is wrapped by DecodeRecord's errors.
var ErrBadRecord = errors.New("logsink: bad log record")

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, and so of New.
var ErrConfig = errors.New("logsink: bad configuration")

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "logsink: bad configuration: Config.MaxConns is
// -1, negative (0 means the default, 8)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}

// Config configures a Sink. The zero value is valid: every zero field
// takes the default documented on it.
type Config struct {
	// Listen is where the enclave connects, e.g. "vsock://any:5001". Used
	// by ListenAndServe only. "" means DefaultListen.
	Listen string
	// Handler receives the re-emitted records. nil means
	// slog.Default().Handler().
	Handler slog.Handler
	// Enclave is the value of the "enclave" attribute of every record. ""
	// means the connection's remote address without its port (the CID for
	// vsock, the IP for TCP).
	Enclave string
	// MaxFrameSize is the largest log frame accepted, in bytes,
	// 1..protocol.MaxFrameSizeLimit; a larger one closes the connection
	// (the enclave reconnects). 0 means DefaultMaxFrameSize (64 KiB).
	MaxFrameSize int
	// MaxAttrs is how many attributes of a record are kept; the rest are
	// counted in an "enclave_attrs_truncated" attribute. 0 means
	// DefaultMaxAttrs (32).
	MaxAttrs int
	// MaxMessage bounds a record's message in bytes; MaxValue bounds each
	// attribute value. Longer text is cut at a rune boundary and marked
	// with "…". 0 means DefaultMaxMessage (4 KiB) and DefaultMaxValue
	// (1 KiB).
	MaxMessage, MaxValue int
	// MaxConns caps the enclave connections served at once. 0 means
	// DefaultMaxConns (8). A connection arriving at the cap is served, and
	// the connection whose last whole frame (or, if none, its accept) is
	// oldest is closed to make room (Stats.EvictedConns): one of the
	// newcomer's own CID when that CID is at MaxConnsPerCID. An enclave
	// that restarted while its old connection was never reset gets in at
	// once.
	MaxConns int
	// MaxConnsPerCID caps the connections of one enclave (one vsock CID;
	// one IP on TCP). A connection beyond it evicts that enclave's own
	// connection idle the longest. 0 means DefaultMaxConnsPerCID (2).
	MaxConnsPerCID int
	// AllowCIDs lists the enclave CIDs whose streams are accepted; others
	// are closed at once (Stats.RefusedConns). Empty means every enclave
	// CID: 4 and up, never the parent's own CID 3 (a process on the parent
	// could otherwise pose as an enclave) nor 0..2. Over TCP (development
	// and tests) only loopback peers are accepted. Serve applies it;
	// ServeConn does not.
	AllowCIDs []uint32
	// RefuseAtCap restores the old policy at MaxConns: the newcomer is
	// closed and the oldest connection too (so the next attempt gets in),
	// and MaxConnsPerCID is not enforced.
	RefuseAtCap bool
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (cfg Config) Validate() error {
	if cfg.Listen != "" {
		if _, err := transport.ParseAddr(cfg.Listen); err != nil {
			return fmt.Errorf("%w: Config.Listen: %w", ErrConfig, err)
		}
	}
	if cfg.MaxFrameSize < 0 || cfg.MaxFrameSize > protocol.MaxFrameSizeLimit {
		return fieldErr("Config.MaxFrameSize", cfg.MaxFrameSize, "outside 1..%d bytes (0 means the default, %d)", protocol.MaxFrameSizeLimit, DefaultMaxFrameSize)
	}
	for _, f := range []struct {
		name     string
		v, deflt int
	}{
		{"Config.MaxAttrs", cfg.MaxAttrs, DefaultMaxAttrs},
		{"Config.MaxMessage", cfg.MaxMessage, DefaultMaxMessage},
		{"Config.MaxValue", cfg.MaxValue, DefaultMaxValue},
		{"Config.MaxConns", cfg.MaxConns, DefaultMaxConns},
		{"Config.MaxConnsPerCID", cfg.MaxConnsPerCID, DefaultMaxConnsPerCID},
	} {
		if f.v < 0 {
			return fieldErr(f.name, f.v, "negative (0 means the default, %d)", f.deflt)
		}
	}
	for _, cid := range cfg.AllowCIDs {
		if cid < 4 || cid == transport.CIDAny {
			return fmt.Errorf("%w: Config.AllowCIDs contains %d, which is not an enclave CID (3 is the parent itself, 0..2 are reserved); list enclave CIDs, 4 and up, or leave it empty for all of them", ErrConfig, cid)
		}
	}
	return nil
}

// Sink receives log streams from enclaves and re-emits their records
// through a slog.Handler. Create it with New; run it with Serve or
// ListenAndServe.
type Sink struct {
	cfg                Config
	sem                chan struct{}
	records, bad, conn atomic.Int64
	evicted, refused   atomic.Int64
	warnLog, refuseLog transport.LogLimiter

	mu   sync.Mutex
	live map[net.Conn]*sinkConn // connections being served
	seq  uint64
}

// sinkConn is one served connection, as eviction sees it.
type sinkConn struct {
	seq     uint64       // arrival order
	peer    string       // peerKey: "cid:16", or the TCP IP
	since   atomic.Int64 // unix nanos of the last whole frame, or of the accept
	evicted bool         // guarded by Sink.mu
}

// New validates cfg and returns a Sink.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Handler == nil {
		cfg.Handler = slog.Default().Handler()
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	if cfg.MaxAttrs == 0 {
		cfg.MaxAttrs = DefaultMaxAttrs
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxValue == 0 {
		cfg.MaxValue = DefaultMaxValue
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerCID == 0 {
		cfg.MaxConnsPerCID = DefaultMaxConnsPerCID
	}
	return &Sink{cfg: cfg, sem: make(chan struct{}, cfg.MaxConns)}, nil
}

// Stats are counters of a Sink. The names are enclave.Stats' for the same
// ideas.
type Stats struct {
	Records      uint64 // records re-emitted
	BadFrames    uint64 // frames dropped because they did not decode
	TotalConns   uint64 // connections accepted
	EvictedConns uint64 // connections closed to make room at the cap
	RefusedConns uint64 // connections closed at once: not from an allowed enclave (AllowCIDs)
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	return Stats{Records: uint64(s.records.Load()), BadFrames: uint64(s.bad.Load()), TotalConns: uint64(s.conn.Load()), EvictedConns: uint64(s.evicted.Load()), RefusedConns: uint64(s.refused.Load())}
}

// peerKey identifies the enclave behind a connection and says whether
// AllowCIDs admits it: "cid:N" for vsock, the IP for a loopback TCP peer.
func (s *Sink) peerKey(a net.Addr) (key string, ok bool) {
	if a == nil {
		return "", false
	}
	ta, err := transport.ParseAddr(transport.AddrOf(a))
	if err != nil {
		return "", false
	}
	switch ta.Network {
	case transport.NetworkVsock:
		key = "cid:" + strconv.FormatUint(uint64(ta.CID), 10)
		if len(s.cfg.AllowCIDs) == 0 {
			return key, ta.CID >= 4 && ta.CID != transport.CIDAny
		}
		return key, slices.Contains(s.cfg.AllowCIDs, ta.CID)
	case transport.NetworkTCP:
		ap, err := netip.ParseAddrPort(ta.HostPort)
		if err != nil {
			return "", false
		}
		ip := ap.Addr().Unmap().WithZone("")
		return ip.String(), ip.IsLoopback()
	}
	return "", false
}

// admit refuses connections from peers AllowCIDs does not admit.
func (s *Sink) admit(c net.Conn) (ok, freed bool) {
	if _, ok := s.peerKey(c.RemoteAddr()); ok {
		return true, false
	}
	n := s.refused.Add(1)
	if ok, _ := s.refuseLog.Allow(); ok {
		s.emitSelf(context.Background(), slog.String(logEnclaveKey, s.cfg.Enclave),
			"enclavekit log sink: refused a connection not from an allowed enclave CID (see AllowCIDs)",
			slog.String("peer", transport.AddrOf(c.RemoteAddr())), slog.Int64("refused_total", n))
	}
	return false, false
}

// makeRoom evicts a connection for c, accepted at MaxConns: c's own
// enclave's idlest when it is at MaxConnsPerCID, else the idlest of all.
func (s *Sink) makeRoom(ctx context.Context, c net.Conn) bool {
	if s.cfg.RefuseAtCap {
		s.evictOldest(ctx)
		return false
	}
	key, _ := s.peerKey(c.RemoteAddr())
	s.mu.Lock()
	victim := s.pickLocked(key, nil, s.countLocked(key) >= s.cfg.MaxConnsPerCID)
	if victim == nil {
		victim = s.pickLocked("", nil, false)
	}
	s.mu.Unlock()
	if victim == nil {
		return false
	}
	s.evict(ctx, victim, "connection cap reached; closed the connection idle the longest")
	return true
}

// countLocked counts key's connections not being evicted.
func (s *Sink) countLocked(key string) int {
	n := 0
	for _, sc := range s.live {
		if sc.peer == key && !sc.evicted {
			n++
		}
	}
	return n
}

// pickLocked marks and returns the connection idle the longest (of key's
// when sameKey), not counting except, or nil.
func (s *Sink) pickLocked(key string, except net.Conn, sameKey bool) net.Conn {
	var victim net.Conn
	var vs *sinkConn
	for c, sc := range s.live {
		if sc.evicted || c == except || (sameKey && sc.peer != key) {
			continue
		}
		if vs == nil || sc.since.Load() < vs.since.Load() || (sc.since.Load() == vs.since.Load() && sc.seq < vs.seq) {
			victim, vs = c, sc
		}
	}
	if vs != nil {
		vs.evicted = true
	}
	return victim
}

func (s *Sink) evict(ctx context.Context, victim net.Conn, why string) {
	victim.Close()
	s.evicted.Add(1)
	s.emitSelf(ctx, slog.String(logEnclaveKey, s.cfg.Enclave), "enclavekit log sink: "+why,
		slog.Int("max_conns", s.cfg.MaxConns), slog.Int("max_conns_per_cid", s.cfg.MaxConnsPerCID))
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends; it
// returns nil when ctx ended.
func (s *Sink) ListenAndServe(ctx context.Context) error {
	return acceptloop.ListenAndServe(ctx, s.cfg.Listen, s.Serve)
}

// Serve accepts enclave connections on ln until ctx ends or ln fails; each
// connection is read until it ends, so an enclave that restarts just
// connects again. Serve closes ln and returns after every connection's
// goroutine ended; it returns nil when ctx ended.
func (s *Sink) Serve(ctx context.Context, ln net.Listener) error {
	l := acceptloop.Loop{
		What:     "log sink",
		Log:      slog.New(s.cfg.Handler).With(slog.String(logEnclaveKey, s.cfg.Enclave)),
		Sem:      s.sem,
		Admitted: func() { s.conn.Add(1) },
		Admit:    s.admit,
		MakeRoom: func(c net.Conn) bool { return s.makeRoom(ctx, c) },
		Serve:    s.ServeConn,
	}
	return l.Run(ctx, ln)
}

// evictOldest closes the longest-served connection when the cap is reached.
// A new connection is most likely a restarted enclave, while the oldest is
// most likely one whose enclave died without the connection being reset; a
// refusal alone would leave the live enclave locked out for good. The
// rejected connection is closed; the enclave's next attempt takes the freed
// slot.
func (s *Sink) evictOldest(ctx context.Context) {
	s.mu.Lock()
	var oldest net.Conn
	var at uint64
	for c, sc := range s.live {
		if oldest == nil || sc.seq < at {
			oldest, at = c, sc.seq
		}
	}
	s.mu.Unlock()
	if oldest == nil {
		return
	}
	oldest.Close()
	s.evicted.Add(1)
	s.emitSelf(ctx, slog.String(logEnclaveKey, s.cfg.Enclave), "enclavekit log sink: connection cap reached; closed the oldest connection so a restarted enclave can reconnect",
		slog.Int("max_conns", s.cfg.MaxConns))
}

func (s *Sink) track(ctx context.Context, c net.Conn) (sc *sinkConn, untrack func()) {
	key, _ := s.peerKey(c.RemoteAddr())
	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[net.Conn]*sinkConn)
	}
	s.seq++
	sc = &sinkConn{seq: s.seq, peer: key}
	sc.since.Store(time.Now().UnixNano())
	s.live[c] = sc
	var victim net.Conn
	if !s.cfg.RefuseAtCap && s.countLocked(key) > s.cfg.MaxConnsPerCID {
		victim = s.pickLocked(key, c, true)
	}
	s.mu.Unlock()
	if victim != nil {
		s.evict(ctx, victim, "per-enclave connection cap reached; closed that enclave's connection idle the longest")
	}
	return sc, func() {
		s.mu.Lock()
		delete(s.live, c)
		s.mu.Unlock()
	}
}

// ServeConn reads one enclave's log stream from c until it ends, ctx ends
// or the enclave sends a frame larger than MaxFrameSize, then closes c. Frames
// that do not decode are dropped and counted.
func (s *Sink) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	sc, untrack := s.track(ctx, c)
	defer untrack()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	name := s.cfg.Enclave
	if name == "" {
		name = enclaveName(c.RemoteAddr())
	}
	self := slog.String(logEnclaveKey, name)
	fr, err := protocol.NewFrameReader(c, s.cfg.MaxFrameSize)
	if err != nil {
		return
	}
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.emitSelf(ctx, self, "enclavekit log sink: enclave log stream failed", slog.String("err", err.Error()))
			}
			return
		}
		sc.since.Store(time.Now().UnixNano())
		rec, err := DecodeRecord(frame)
		if err != nil {
			s.bad.Add(1)
			continue
		}
		r := s.record(rec, self)
		if s.cfg.Handler.Enabled(ctx, r.Level) {
			_ = s.cfg.Handler.Handle(ctx, r)
		}
		s.records.Add(1)
	}
}

func (s *Sink) emitSelf(ctx context.Context, self slog.Attr, msg string, attrs ...slog.Attr) {
	if !s.cfg.Handler.Enabled(ctx, slog.LevelWarn) {
		return
	}
	ok, suppressed := s.warnLog.Allow()
	if !ok {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, msg, 0)
	r.AddAttrs(self)
	r.AddAttrs(attrs...)
	if suppressed > 0 {
		r.AddAttrs(slog.Uint64("suppressed", suppressed))
	}
	_ = s.cfg.Handler.Handle(ctx, r)
}

// DecodeRecord decodes one log frame from an enclave: a protocol
// envelope whose method is protocol.MethodLog and whose body is a
// protocol.LogRecord. The bytes are untrusted; every error wraps
// ErrBadRecord.
func DecodeRecord(frame []byte) (protocol.LogRecord, error) {
	env, err := protocol.UnmarshalEnvelope(frame)
	if err != nil {
		return protocol.LogRecord{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if env.Method != protocol.MethodLog {
		return protocol.LogRecord{}, fmt.Errorf("%w: method %.40q, want %q", ErrBadRecord, env.Method, protocol.MethodLog)
	}
	var rec protocol.LogRecord
	if err := protocol.Unmarshal(env.Body, &rec); err != nil {
		return protocol.LogRecord{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	return rec, nil
}

// record turns an enclave's record into the slog.Record the sink emits: its
// time is the enclave's claim and a "received" attribute holds the
// parent's own clock at receipt (when the enclave sent no time, the record
// time is the receipt and nothing is added); the level is clamped to debug-4..error+4, the message and attribute text are
// cut to the configured sizes with control characters removed, attributes
// beyond MaxAttrs are counted, not kept, and the enclave's attributes go in
// an "attrs" group so they cannot pose as the parent's own.
func (s *Sink) record(rec protocol.LogRecord, self slog.Attr) slog.Record {
	received := time.Now()
	t := time.Unix(0, rec.TimeUnixNano)
	if rec.TimeUnixNano == 0 {
		t = received
	}
	level := slog.Level(min(max(rec.Level, int64(minLogLevel)), int64(maxLogLevel)))
	r := slog.NewRecord(t, level, sanitize.Text(rec.Message, s.cfg.MaxMessage), 0)
	r.AddAttrs(self)
	if rec.TimeUnixNano != 0 {
		r.AddAttrs(slog.Time(logReceivedKey, received))
	}
	if rec.Dropped > 0 {
		r.AddAttrs(slog.Uint64(logDroppedKey, rec.Dropped))
	}
	if len(rec.Attrs) > 0 {
		n := min(len(rec.Attrs), s.cfg.MaxAttrs)
		group := make([]any, 0, n)
		for _, a := range rec.Attrs[:n] {
			key := sanitize.Text(a.Key, maxLogKey)
			if key == "" {
				key = "_"
			}
			group = append(group, slog.String(key, sanitize.Text(a.Value, s.cfg.MaxValue)))
		}
		r.AddAttrs(slog.Group(logAttrGroup, group...))
		if extra := len(rec.Attrs) - n; extra > 0 {
			r.AddAttrs(slog.Int(logTruncatedAttrsKey, extra))
		}
	}
	return r
}

// enclaveName names a connection's sender by its address without the port:
// "16" for vsock://16:1234, "127.0.0.1" for tcp://127.0.0.1:1234.
func enclaveName(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	s := transport.AddrOf(a)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}
