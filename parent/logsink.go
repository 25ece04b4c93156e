package parent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults and limits of LogSinkConfig.
const (
	DefaultLogSinkListen = "vsock://any:5001"
	DefaultLogMaxFrame   = 64 << 10
	DefaultLogMaxAttrs   = 32
	DefaultLogMaxMessage = 4 << 10
	DefaultLogMaxValue   = 1 << 10
	DefaultLogMaxConns   = 8
	maxLogKey            = 128
	minLogLevel          = slog.LevelDebug - 4
	maxLogLevel          = slog.LevelError + 4
	logAttrGroup         = "attrs"
	logEnclaveKey        = "enclave"
	logDroppedKey        = "enclave_dropped"
	logTruncatedAttrsKey = "enclave_attrs_truncated"
)

// ErrBadLogRecord is wrapped by DecodeLogRecord's errors.
var ErrBadLogRecord = errors.New("parent: bad log record")

// LogSinkConfig configures a LogSink.
type LogSinkConfig struct {
	// Listen is where the enclave connects, e.g. "vsock://any:5001". Used
	// by ListenAndServe only. "" means DefaultLogSinkListen.
	Listen string
	// Handler receives the re-emitted records. nil means
	// slog.Default().Handler().
	Handler slog.Handler
	// Enclave is the value of the "enclave" attribute of every record. ""
	// means the connection's remote address without its port (the CID for
	// vsock, the IP for TCP).
	Enclave string
	// MaxFrame is the largest log frame accepted, in bytes; a larger one
	// closes the connection (the enclave reconnects). 0 means
	// DefaultLogMaxFrame.
	MaxFrame int
	// MaxAttrs is how many attributes of a record are kept; the rest are
	// counted in an "enclave_attrs_truncated" attribute. 0 means
	// DefaultLogMaxAttrs.
	MaxAttrs int
	// MaxMessage bounds a record's message in bytes; MaxValue bounds each
	// attribute value. Longer text is cut at a rune boundary and marked
	// with "…". 0 means DefaultLogMaxMessage and DefaultLogMaxValue.
	MaxMessage, MaxValue int
	// MaxConns caps the enclave connections served at once. 0 means
	// DefaultLogMaxConns. A connection arriving at the cap is closed, and so
	// is the oldest one being served, so that an enclave that restarted
	// while its old connection was never reset gets in on its next attempt.
	MaxConns int
}

// Validate reports whether cfg is usable.
func (cfg LogSinkConfig) Validate() error {
	if cfg.Listen != "" {
		if _, err := transport.ParseAddr(cfg.Listen); err != nil {
			return fmt.Errorf("parent: LogSinkConfig.Listen: %w", err)
		}
	}
	switch {
	case cfg.MaxFrame < 0 || cfg.MaxFrame > protocol.MaxFrameLimit:
		return fmt.Errorf("parent: LogSinkConfig.MaxFrame %d out of range: want 0..%d", cfg.MaxFrame, protocol.MaxFrameLimit)
	case cfg.MaxAttrs < 0, cfg.MaxMessage < 0, cfg.MaxValue < 0, cfg.MaxConns < 0:
		return errors.New("parent: LogSinkConfig limits must not be negative")
	}
	return nil
}

// LogSink receives log streams from enclaves and re-emits their records
// through a slog.Handler. Create it with NewLogSink; run it with Serve or
// ListenAndServe.
type LogSink struct {
	cfg                LogSinkConfig
	sem                chan struct{}
	records, bad, conn atomic.Int64
	evicted            atomic.Int64
	warnLog            logLimiter

	mu   sync.Mutex
	live map[net.Conn]uint64 // connections being served, with their arrival order
	seq  uint64
}

// NewLogSink validates cfg and returns a LogSink.
func NewLogSink(cfg LogSinkConfig) (*LogSink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultLogSinkListen
	}
	if cfg.Handler == nil {
		cfg.Handler = slog.Default().Handler()
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = DefaultLogMaxFrame
	}
	if cfg.MaxAttrs == 0 {
		cfg.MaxAttrs = DefaultLogMaxAttrs
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = DefaultLogMaxMessage
	}
	if cfg.MaxValue == 0 {
		cfg.MaxValue = DefaultLogMaxValue
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultLogMaxConns
	}
	return &LogSink{cfg: cfg, sem: make(chan struct{}, cfg.MaxConns)}, nil
}

// LogSinkStats are counters of a LogSink.
type LogSinkStats struct {
	Records int64 // records re-emitted
	Bad     int64 // frames dropped because they did not decode
	Conns   int64 // connections accepted
	Evicted int64 // connections closed to make room at the cap
}

// Stats returns the sink's counters.
func (s *LogSink) Stats() LogSinkStats {
	return LogSinkStats{Records: s.records.Load(), Bad: s.bad.Load(), Conns: s.conn.Load(), Evicted: s.evicted.Load()}
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends; it
// returns nil when ctx ended.
func (s *LogSink) ListenAndServe(ctx context.Context) error {
	return listenAndServe(ctx, s.cfg.Listen, s.Serve)
}

// Serve accepts enclave connections on ln until ctx ends or ln fails; each
// connection is read until it ends, so an enclave that restarts just
// connects again. Serve closes ln and returns after every connection's
// goroutine ended; it returns nil when ctx ended.
func (s *LogSink) Serve(ctx context.Context, ln net.Listener) error {
	l := acceptLoop{
		what:     "log sink",
		sem:      s.sem,
		admitted: func() { s.conn.Add(1) },
		reject:   func(net.Conn) { s.evictOldest(ctx) },
		serve:    s.ServeConn,
	}
	return l.run(ctx, ln)
}

// evictOldest closes the longest-served connection when the cap is reached.
// A new connection is most likely a restarted enclave, while the oldest is
// most likely one whose enclave died without the connection being reset; a
// refusal alone would leave the live enclave locked out for good. The
// rejected connection is closed; the enclave's next attempt takes the freed
// slot.
func (s *LogSink) evictOldest(ctx context.Context) {
	s.mu.Lock()
	var oldest net.Conn
	var at uint64
	for c, seq := range s.live {
		if oldest == nil || seq < at {
			oldest, at = c, seq
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

func (s *LogSink) track(c net.Conn) (untrack func()) {
	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[net.Conn]uint64)
	}
	s.seq++
	s.live[c] = s.seq
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.live, c)
		s.mu.Unlock()
	}
}

// ServeConn reads one enclave's log stream from c until it ends, ctx ends
// or the enclave sends a frame larger than MaxFrame, then closes c. Frames
// that do not decode are dropped and counted.
func (s *LogSink) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	defer s.track(c)()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	name := s.cfg.Enclave
	if name == "" {
		name = enclaveName(c.RemoteAddr())
	}
	self := slog.String(logEnclaveKey, name)
	fr, err := protocol.NewFrameReader(c, s.cfg.MaxFrame)
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
		rec, err := DecodeLogRecord(frame)
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

func (s *LogSink) emitSelf(ctx context.Context, self slog.Attr, msg string, attrs ...slog.Attr) {
	if !s.cfg.Handler.Enabled(ctx, slog.LevelWarn) || !s.warnLog.allow() {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, msg, 0)
	r.AddAttrs(self)
	r.AddAttrs(attrs...)
	_ = s.cfg.Handler.Handle(ctx, r)
}

// DecodeLogRecord decodes one log frame from an enclave: a protocol
// envelope whose method is protocol.MethodLog and whose body is a
// protocol.LogRecord. The bytes are untrusted; every error wraps
// ErrBadLogRecord.
func DecodeLogRecord(frame []byte) (protocol.LogRecord, error) {
	env, err := protocol.UnmarshalEnvelope(frame)
	if err != nil {
		return protocol.LogRecord{}, fmt.Errorf("%w: %w", ErrBadLogRecord, err)
	}
	if env.Method != protocol.MethodLog {
		return protocol.LogRecord{}, fmt.Errorf("%w: method %.40q, want %q", ErrBadLogRecord, env.Method, protocol.MethodLog)
	}
	var rec protocol.LogRecord
	if err := protocol.Unmarshal(env.Body, &rec); err != nil {
		return protocol.LogRecord{}, fmt.Errorf("%w: %w", ErrBadLogRecord, err)
	}
	return rec, nil
}

// record turns an enclave's record into the slog.Record the sink emits: the
// level is clamped to debug-4..error+4, the message and attribute text are
// cut to the configured sizes with control characters removed, attributes
// beyond MaxAttrs are counted, not kept, and the enclave's attributes go in
// an "attrs" group so they cannot pose as the parent's own.
func (s *LogSink) record(rec protocol.LogRecord, self slog.Attr) slog.Record {
	t := time.Unix(0, rec.TimeUnixNano)
	if rec.TimeUnixNano == 0 {
		t = time.Now()
	}
	level := slog.Level(min(max(rec.Level, int64(minLogLevel)), int64(maxLogLevel)))
	r := slog.NewRecord(t, level, Sanitize(rec.Message, s.cfg.MaxMessage), 0)
	r.AddAttrs(self)
	if rec.Dropped > 0 {
		r.AddAttrs(slog.Uint64(logDroppedKey, rec.Dropped))
	}
	if len(rec.Attrs) > 0 {
		n := min(len(rec.Attrs), s.cfg.MaxAttrs)
		group := make([]any, 0, n)
		for _, a := range rec.Attrs[:n] {
			key := Sanitize(a.Key, maxLogKey)
			if key == "" {
				key = "_"
			}
			group = append(group, slog.String(key, Sanitize(a.Value, s.cfg.MaxValue)))
		}
		r.AddAttrs(slog.Group(logAttrGroup, group...))
		if extra := len(rec.Attrs) - n; extra > 0 {
			r.AddAttrs(slog.Int(logTruncatedAttrsKey, extra))
		}
	}
	return r
}

// Sanitize returns s with control characters (C0, DEL, C1), Unicode format
// characters (bidirectional overrides, zero-width characters), line and
// paragraph separators (U+2028, U+2029) and invalid UTF-8 removed, cut to
// at most max bytes at a rune boundary; a cut string ends in "…" (counted
// in max). Text from an enclave passes through it
// before it reaches a log, so it cannot forge lines or hide text in a
// terminal.
func Sanitize(s string, max int) string {
	clean := true
	for _, r := range s {
		if dropRune(r) {
			clean = false
			break
		}
	}
	if clean && len(s) <= max {
		return s
	}
	const ellipsis = "…"
	var b strings.Builder
	b.Grow(min(len(s), max))
	for _, r := range s {
		if dropRune(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			return cut(b.String(), max, ellipsis)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dropRune reports the runes Sanitize removes: invalid UTF-8, controls,
// format characters, and the Unicode line and paragraph separators
// (U+2028, U+2029), which some viewers and JavaScript treat as line breaks.
func dropRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) ||
		unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// cut shortens s so that s+suffix fits in max bytes, at a rune boundary.
func cut(s string, max int, suffix string) string {
	if max < len(suffix) {
		return ""
	}
	n := max - len(suffix)
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:min(n, len(s))] + suffix
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
