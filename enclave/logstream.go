package enclave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// DefaultLogSinkAddr is where the parent's log sink listens.
const DefaultLogSinkAddr = "vsock://3:5001"

// Defaults for zero LogConfig fields.
const (
	DefaultSinkQueue       = 1024
	DefaultLogWriteTimeout = 2 * time.Second
	DefaultLogMinBackoff   = 100 * time.Millisecond
	DefaultLogMaxBackoff   = 10 * time.Second
)

// LogConfig configures a LogHandler. The zero value is valid: every zero
// field takes the default documented on it.
type LogConfig struct {
	// Addr is the parent's log sink. "" means DefaultLogSinkAddr
	// ("vsock://3:5001").
	Addr string
	// Console receives every record as slog text as well: it is the
	// enclave console. nil means os.Stderr; io.Discard disables it. Writes
	// go through a ConsoleWriter: a console that does not keep up (a pipe
	// nobody reads) drops records, counted in LogHandler.ConsoleDropped,
	// and never blocks the caller.
	Console io.Writer
	// ConsoleQueue is how many records wait for the console. 0 means
	// DefaultConsoleQueue (1024).
	ConsoleQueue int
	// ConsoleJSON writes the console as slog JSON lines instead of text
	// (false, the zero value).
	ConsoleJSON bool
	// Level is the minimum level handled. nil means slog.LevelInfo.
	Level slog.Leveler
	// SinkQueue is how many records wait for the sink. 0 means
	// DefaultSinkQueue (1024). When it is full, new records are dropped
	// and counted, never waited for.
	SinkQueue int
	// WriteTimeout bounds writing one record to the sink; on expiry the
	// connection is dropped and re-dialed. 0 means DefaultLogWriteTimeout
	// (2s).
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential wait between dial
	// attempts, MinBackoff at most MaxBackoff. A zero MinBackoff means
	// DefaultLogMinBackoff (100ms), or MaxBackoff if that is shorter; a
	// zero MaxBackoff means DefaultLogMaxBackoff (10s), or MinBackoff if
	// that is longer.
	MinBackoff, MaxBackoff time.Duration
	// Dial connects to Addr. nil means transport.Dial. Tests substitute it.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Validate reports the first invalid field, naming it, its value and the
// accepted values; the error wraps ErrConfig.
func (c LogConfig) Validate() error {
	if c.Addr != "" {
		if _, err := transport.ParseAddr(c.Addr); err != nil {
			return fmt.Errorf("%w: LogConfig.Addr: %w", ErrConfig, err)
		}
	}
	switch {
	case c.ConsoleQueue < 0:
		return fieldErr("LogConfig.ConsoleQueue", c.ConsoleQueue, "negative (0 means the default, %d)", DefaultConsoleQueue)
	case c.SinkQueue < 0:
		return fieldErr("LogConfig.SinkQueue", c.SinkQueue, "negative (0 means the default, %d)", DefaultSinkQueue)
	case c.WriteTimeout < 0:
		return fieldErr("LogConfig.WriteTimeout", c.WriteTimeout, "negative (0 means the default, %v)", DefaultLogWriteTimeout)
	case c.MinBackoff < 0:
		return fieldErr("LogConfig.MinBackoff", c.MinBackoff, "negative (0 means the default, %v)", DefaultLogMinBackoff)
	case c.MaxBackoff < 0:
		return fieldErr("LogConfig.MaxBackoff", c.MaxBackoff, "negative (0 means the default, %v)", DefaultLogMaxBackoff)
	case c.MaxBackoff != 0 && c.MinBackoff > c.MaxBackoff:
		return fieldErr("LogConfig.MinBackoff", c.MinBackoff, "above MaxBackoff (%v)", c.MaxBackoff)
	}
	return nil
}

// LogHandler is an slog.Handler that queues each record for the console
// (stderr, see ConsoleWriter) and for the parent's log sink, where a background
// goroutine sends it as a frame holding
// Envelope{Method: protocol.MethodLog, ID: sequence number, Body: LogRecord}.
// The sink never responds.
//
// Logging never blocks, on the console or on the sink: when the parent is slow or gone the
// bounded buffer fills and further records are dropped and counted; the next
// record that reaches the sink carries the count in LogRecord.Dropped. The
// sender re-dials with exponential backoff. Handlers derived with WithAttrs
// and WithGroup share the buffer and sender. Call Close to stop the sender.
type LogHandler struct {
	core    *logCore
	console slog.Handler
	attrs   []protocol.LogAttr // from WithAttrs, flattened
	prefix  string             // open groups, "a.b."
}

type logCore struct {
	cfg     LogConfig
	level   slog.Leveler
	ch      chan protocol.LogRecord
	closing chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	console *ConsoleWriter // nil when the console is io.Discard
	once    sync.Once
	closed  atomic.Bool

	dropped atomic.Uint64
	sent    atomic.Uint64

	// Owned by the sender goroutine.
	conn      net.Conn
	fw        *protocol.FrameWriter
	stopClose func() bool
	seq       uint64
	reported  uint64
	backoff   time.Duration
}

// NewLogHandler validates cfg and starts the sender goroutine.
func NewLogHandler(cfg LogConfig) (*LogHandler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultLogSinkAddr
	}
	if cfg.Console == nil {
		cfg.Console = os.Stderr
	}
	if cfg.Level == nil {
		cfg.Level = slog.LevelInfo
	}
	if cfg.SinkQueue == 0 {
		cfg.SinkQueue = DefaultSinkQueue
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultLogWriteTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = min(DefaultLogMinBackoff, max(cfg.MaxBackoff, time.Millisecond))
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultLogMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Dial == nil {
		cfg.Dial = transport.Dial
	}
	ctx, cancel := context.WithCancel(context.Background())
	core := &logCore{
		cfg:     cfg,
		level:   cfg.Level,
		ch:      make(chan protocol.LogRecord, cfg.SinkQueue),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
	go core.run()
	var console slog.Handler
	if cfg.Console != io.Discard {
		core.console = NewConsoleWriter(cfg.Console, cfg.ConsoleQueue)
		console = slog.NewTextHandler(core.console, &slog.HandlerOptions{Level: cfg.Level})
		if cfg.ConsoleJSON {
			console = slog.NewJSONHandler(core.console, &slog.HandlerOptions{Level: cfg.Level})
		}
	}
	return &LogHandler{core: core, console: console}, nil
}

// Enabled reports whether level is at or above the configured level.
func (h *LogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.core.level.Level()
}

// Handle queues r for the console and for the sink without blocking. It
// returns an error only when r cannot be formatted.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.console != nil {
		err = h.console.Handle(ctx, r)
	}
	if h.core.closed.Load() {
		h.core.dropped.Add(1)
		return err
	}
	rec := protocol.LogRecord{Level: int64(r.Level), Message: r.Message}
	if !r.Time.IsZero() {
		rec.TimeUnixNano = r.Time.UnixNano()
	}
	if len(h.attrs) > 0 || r.NumAttrs() > 0 {
		rec.Attrs = make([]protocol.LogAttr, 0, len(h.attrs)+r.NumAttrs())
		rec.Attrs = append(rec.Attrs, h.attrs...)
		r.Attrs(func(a slog.Attr) bool {
			rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
			return true
		})
	}
	select {
	case h.core.ch <- rec:
	default:
		h.core.dropped.Add(1)
	}
	return err
}

// WithAttrs returns a handler that adds attrs to every record.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = append([]protocol.LogAttr(nil), h.attrs...)
	for _, a := range attrs {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	if h.console != nil {
		h2.console = h.console.WithAttrs(attrs)
	}
	return &h2
}

// WithGroup returns a handler that qualifies later attributes with name.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	if h.console != nil {
		h2.console = h.console.WithGroup(name)
	}
	return &h2
}

// Dropped returns how many records were dropped because the buffer was
// full, the sink was unreachable, or the handler was closed.
func (h *LogHandler) Dropped() uint64 { return h.core.dropped.Load() }

// Sent returns how many records were written to the sink.
func (h *LogHandler) Sent() uint64 { return h.core.sent.Load() }

// ConsoleDropped returns how many records the console dropped because it
// did not keep up (or was closed); Server.Stats reports it too.
func (h *LogHandler) ConsoleDropped() uint64 {
	if h.core.console == nil {
		return 0
	}
	return h.core.console.Dropped()
}

// Close stops the sender and the console. It first tries to deliver the
// buffered records until ctx is done, then drops the rest and closes the
// sink connection; then it flushes the console within what is left of
// ctx. Records handled after Close are dropped and counted. Close is safe
// to call more than once and from any derived handler. Give ctx a
// deadline: while the sink is unreachable Close keeps re-dialing until ctx
// is done.
func (h *LogHandler) Close(ctx context.Context) error {
	c := h.core
	c.once.Do(func() {
		c.closed.Store(true)
		close(c.closing)
	})
	var err error
	select {
	case <-c.done:
	case <-ctx.Done():
		c.cancel()
		<-c.done
		err = fmt.Errorf("enclave: log handler closed before every buffered record reached the sink: %w", ctx.Err())
	}
	if c.console != nil {
		if cerr := c.console.Close(ctx); err == nil {
			err = cerr
		}
	}
	return err
}

// appendAttr flattens a into dotted keys with text values.
func appendAttr(dst []protocol.LogAttr, prefix string, a slog.Attr) []protocol.LogAttr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return dst
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			dst = appendAttr(dst, p, ga)
		}
		return dst
	}
	return append(dst, protocol.LogAttr{Key: prefix + a.Key, Value: a.Value.String()})
}

func (c *logCore) run() {
	defer close(c.done)
	defer c.disconnect()
	for {
		var rec protocol.LogRecord
		select {
		case rec = <-c.ch:
		case <-c.ctx.Done():
			c.dropRemaining()
			return
		case <-c.closing:
			select {
			case rec = <-c.ch:
			default:
				return
			}
		}
		if !c.send(rec) {
			c.dropRemaining()
			return
		}
	}
}

func (c *logCore) dropRemaining() {
	for {
		select {
		case <-c.ch:
			c.dropped.Add(1)
		default:
			return
		}
	}
}

// send delivers rec, dialing (with backoff) as needed. It returns false
// only when the core is canceled.
func (c *logCore) send(rec protocol.LogRecord) bool {
	c.seq++
	for {
		if c.conn == nil && !c.connect() {
			c.dropped.Add(1)
			return false
		}
		total := c.dropped.Load()
		rec.Dropped = total - c.reported
		err := c.write(&rec)
		if err == nil {
			c.reported = total
			c.sent.Add(1)
			c.backoff = 0
			return true
		}
		if errors.Is(err, protocol.ErrFrameTooLarge) || errors.Is(err, errLogEncode) {
			// The record itself is unsendable; the connection is fine.
			c.dropped.Add(1)
			return true
		}
		c.disconnect()
	}
}

var errLogEncode = errors.New("enclave: encoding log record")

func (c *logCore) write(rec *protocol.LogRecord) error {
	body, err := protocol.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%w: %w", errLogEncode, err)
	}
	b, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: c.seq, Method: protocol.MethodLog, Body: body})
	if err != nil {
		return fmt.Errorf("%w: %w", errLogEncode, err)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	return c.fw.WriteFrame(b)
}

// connect waits out the backoff, then dials once. It returns false when the
// core is canceled.
func (c *logCore) connect() bool {
	for {
		if c.backoff > 0 {
			t := time.NewTimer(c.backoff)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		c.backoff = min(max(2*c.backoff, c.cfg.MinBackoff), c.cfg.MaxBackoff)
		dctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
		conn, err := c.cfg.Dial(dctx, c.cfg.Addr)
		cancel()
		if c.ctx.Err() != nil {
			if err == nil {
				conn.Close()
			}
			return false
		}
		if err == nil {
			c.conn = conn
			c.fw, _ = protocol.NewFrameWriter(retryConn{conn}, 0)
			// Closing unblocks a write in progress when Close gives up.
			c.stopClose = context.AfterFunc(c.ctx, func() { conn.Close() })
			return true
		}
	}
}

func (c *logCore) disconnect() {
	if c.conn != nil {
		c.stopClose()
		c.conn.Close()
		c.conn, c.fw, c.stopClose = nil, nil, nil
	}
}
