package enclave

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults used for zero Config fields.
const (
	DefaultAddr             = "vsock://any:5000"
	DefaultMaxConns         = 256
	DefaultMaxInFlight      = 32
	DefaultReadFrameTimeout = 10 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultWriteTimeout     = 10 * time.Second
	DefaultHandlerTimeout   = 30 * time.Second
	DefaultDrainTimeout     = 10 * time.Second
	// DefaultMaxInFlightBytes bounds the bytes of requests in flight across
	// the whole server (see Config.MaxInFlightBytes): 64 MiB, which is also
	// the largest MaxFrameSize, so every frame size fits.
	DefaultMaxInFlightBytes = 64 << 20
	// MinClockCheckInterval is the shortest Config.ClockCheckInterval.
	MinClockCheckInterval = time.Second
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, LogConfig.Validate and AttestedTLSConfig.Validate,
// and so of New, Listen, NewLogHandler and NewAttestedListener.
var ErrConfig = errors.New("enclave: bad configuration")

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "enclave: bad configuration: Config.MaxConns
// is -1, negative (0 means the default, 256)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}

// Config configures a Server. The zero value is valid: every zero field
// takes the default documented on it (the Default* constants); negative
// durations and counts are errors.
type Config struct {
	// Addr is the listen address in transport syntax: "vsock://any:5000"
	// inside an enclave, "tcp://127.0.0.1:0" in tests. "" means
	// DefaultAddr.
	Addr string

	// MaxConns caps the number of open client connections. 0 means
	// DefaultMaxConns (256).
	// A connection accepted while the cap is reached makes room: the server
	// evicts (closes) the open connection that has been idle or stalled
	// the longest, counted in Stats.EvictedConns: the one whose last
	// progress (accepted, a request frame completed, a response written,
	// or, while a frame is arriving, that frame's first byte) is oldest.
	// Connections that have not yet completed a request (silent, or
	// stalled in their first frame) go before those that have; a
	// connection with a request in flight is the last to go. So no number
	// of silent or trickling connections keeps a client out: the newcomer
	// is served, and a client that has been served keeps its connection.
	// Only when every open connection is already being evicted is the
	// newcomer closed at once and counted in Stats.RejectedConns; it is
	// never queued.
	MaxConns int

	// RefuseAtCap restores the old policy at MaxConns: the newcomer is
	// closed at once and counted in Stats.RejectedConns, and nothing is
	// evicted. It lets a holder of MaxConns idle connections lock every
	// other client out until IdleTimeout; leave it off.
	RefuseAtCap bool

	// MaxInFlight caps the requests being handled at once on one
	// connection; 0 means DefaultMaxInFlight (32). Requests may be
	// pipelined; once the cap is reached the server stops reading that
	// connection until a response has been written.
	MaxInFlight int

	// ReadFrameTimeout bounds the time to receive a whole frame, length
	// prefix and payload, once its first byte has arrived; 0 means
	// DefaultReadFrameTimeout (10s). A peer that sends part of a frame and
	// stalls (slowloris) is disconnected when it expires.
	ReadFrameTimeout time.Duration

	// IdleTimeout bounds the wait for the first byte of the next frame;
	// 0 means DefaultIdleTimeout (2m). Idle connections are closed when it
	// expires. The wait starts when the server reads on: at once after
	// reading a request that is pipelined with others, and once the
	// response is written for a request alone on its connection (a
	// connection waiting for its only response is not idle).
	IdleTimeout time.Duration

	// WriteTimeout bounds writing one response frame; 0 means
	// DefaultWriteTimeout (10s). A peer that does not read its responses is
	// disconnected when it expires.
	WriteTimeout time.Duration

	// MaxFrameSize is the largest frame payload accepted or sent, in
	// bytes, 1..protocol.MaxFrameSizeLimit (64 MiB); 0 means
	// protocol.DefaultMaxFrameSize (1 MiB). A larger declared length closes
	// the connection before any allocation.
	MaxFrameSize int

	// MaxInFlightBytes bounds, across all connections, the bytes held by
	// requests being handled; at least MaxFrameSize, and 0 means
	// DefaultMaxInFlightBytes (64 MiB). A request is charged its frame's
	// payload size from when its frame has been read until its response
	// has been written; the response frame is charged too while it is
	// written. When a request does not fit, the
	// server stops reading that connection until enough bytes are released
	// (the wait is counted in Stats.BudgetWaits); requests are admitted in
	// arrival order.
	//
	// The budget is shared fairly: a connection is admitted requests only
	// while what it holds (requests and the responses being written to it)
	// is below its share, MaxInFlightBytes divided by the connections
	// holding or waiting for bytes (a connection holding nothing may
	// always have one request admitted when it fits), and a waiter over its
	// share does not hold up the queue. So a connection that pipelines
	// large requests and does not read its responses holds about its share
	// until WriteTimeout disconnects it, never the whole budget. A small
	// request (up to 64 KiB, or MaxInFlightBytes/64 if less) from a
	// connection holding nothing is admitted at once even when the budget
	// is full, so a health check never queues behind bulk traffic; this
	// adds at most MaxConns × 64 KiB to the bound below. And once a
	// response write to a connection has been in progress for 5 ms (the
	// peer is not reading), nothing more is read from that connection
	// until the write completes: a client must read its responses while
	// it sends more requests (parent.Client does).
	//
	// Without it the worst case would be MaxConns × MaxInFlight ×
	// MaxFrameSize (8 GiB with the defaults), far more than an enclave has.
	// With it, request memory is at most MaxInFlightBytes plus, per open
	// connection, the one frame being received or waiting for admission:
	// about MaxInFlightBytes + MaxConns × MaxFrameSize (64 MiB + 256 MiB
	// with the defaults; frame buffers grow with the bytes that actually
	// arrive, never with a declared length). Lower MaxConns or MaxFrameSize
	// for an enclave with little memory.
	MaxInFlightBytes int64

	// HandlerTimeout bounds each handler call through its context; 0 means
	// DefaultHandlerTimeout (30s). Handlers must return when their context
	// is done.
	HandlerTimeout time.Duration

	// DrainTimeout bounds graceful shutdown; 0 means DefaultDrainTimeout
	// (10s). After the context given to Serve is canceled, in-flight
	// requests have this long to finish before their contexts are canceled
	// and connections are closed.
	DrainTimeout time.Duration

	// Logger receives the server's log, including the details of errors
	// that cross the enclave boundary only as generic codes. nil means
	// slog.Default().
	Logger *slog.Logger

	// Dev is the explicit development override: failed startup checks are
	// logged as loud warnings instead of refusing to start, and health
	// reports dev=true. Never set it in production. false (the zero value)
	// refuses to start when a check fails.
	Dev bool

	// SysFS is the file system the startup checks read, rooted at "/".
	// nil means the real one (os.DirFS("/")); tests pass an fstest.MapFS.
	SysFS fs.FS

	// Attester serves enclavekit.attest, and is the NSM that the startup
	// checks of Listen and Serve ask for a document (see AllowDebug,
	// MaxClockSkew): in an enclave, the NSM device (attest.OpenDefaultNSM).
	// nil makes enclavekit.attest answer "unavailable" and fails the "nsm"
	// check, so that only Dev can start such a server.
	Attester attest.Attester

	// AllowDebug accepts an NSM whose documents report an all-zero PCR0,
	// i.e. a debug-mode enclave, whose memory and console the parent can
	// read: the "debug" check then logs a loud warning instead of refusing
	// to start. Like every field here it must come from the enclave image
	// (a flag of its command line), never from the parent.
	AllowDebug bool

	// MaxClockSkew bounds how far the system clock may be from the NSM's
	// time (the timestamp of a fresh attestation document); 0 means
	// DefaultMaxClockSkew (5s). At start a larger skew refuses to start
	// (check "clock"); while serving it is logged as an error.
	MaxClockSkew time.Duration

	// ClockCheckInterval is how often a serving server re-reads the NSM's
	// time to re-check the clock and feed the TrustedClock: at least
	// MinClockCheckInterval (1s); 0 means DefaultClockCheckInterval (1m).
	ClockCheckInterval time.Duration

	// NSMTimeout bounds each attestation request of the NSM checks; 0
	// means DefaultNSMTimeout (5s). An NSM that does not answer in time
	// fails check "nsm".
	NSMTimeout time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.ReadFrameTimeout == 0 {
		c.ReadFrameTimeout = DefaultReadFrameTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = protocol.DefaultMaxFrameSize
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.ClockCheckInterval == 0 {
		c.ClockCheckInterval = DefaultClockCheckInterval
	}
	if c.NSMTimeout == 0 {
		c.NSMTimeout = DefaultNSMTimeout
	}
	return c
}

// Validate reports the first invalid field, naming it, its value and the
// accepted values (see fieldErr); the error wraps ErrConfig. Zero fields
// are valid (they take defaults).
func (c Config) Validate() error {
	if c.Addr != "" {
		if _, err := transport.ParseAddr(c.Addr); err != nil {
			return fmt.Errorf("%w: Config.Addr: %w", ErrConfig, err)
		}
	}
	switch {
	case c.MaxConns < 0:
		return fieldErr("Config.MaxConns", c.MaxConns, "negative (0 means the default, %d)", DefaultMaxConns)
	case c.MaxInFlight < 0:
		return fieldErr("Config.MaxInFlight", c.MaxInFlight, "negative (0 means the default, %d)", DefaultMaxInFlight)
	case c.MaxFrameSize < 0 || c.MaxFrameSize > protocol.MaxFrameSizeLimit:
		return fieldErr("Config.MaxFrameSize", c.MaxFrameSize, "outside 1..%d bytes (0 means the default, %d)", protocol.MaxFrameSizeLimit, protocol.DefaultMaxFrameSize)
	case c.MaxInFlightBytes < 0:
		return fieldErr("Config.MaxInFlightBytes", c.MaxInFlightBytes, "negative (0 means the default, %d)", DefaultMaxInFlightBytes)
	case c.ClockCheckInterval > 0 && c.ClockCheckInterval < MinClockCheckInterval:
		return fieldErr("Config.ClockCheckInterval", c.ClockCheckInterval, "below %v (0 means the default, %v)", MinClockCheckInterval, DefaultClockCheckInterval)
	}
	frame := int64(c.MaxFrameSize)
	if frame == 0 {
		frame = protocol.DefaultMaxFrameSize
	}
	if c.MaxInFlightBytes != 0 && c.MaxInFlightBytes < frame {
		return fieldErr("Config.MaxInFlightBytes", c.MaxInFlightBytes, "below MaxFrameSize (%d): want at least MaxFrameSize, so that a largest request fits (0 means the default, %d)", frame, DefaultMaxInFlightBytes)
	}
	for _, d := range []struct {
		name     string
		v, deflt time.Duration
	}{
		{"Config.ReadFrameTimeout", c.ReadFrameTimeout, DefaultReadFrameTimeout},
		{"Config.IdleTimeout", c.IdleTimeout, DefaultIdleTimeout},
		{"Config.WriteTimeout", c.WriteTimeout, DefaultWriteTimeout},
		{"Config.HandlerTimeout", c.HandlerTimeout, DefaultHandlerTimeout},
		{"Config.DrainTimeout", c.DrainTimeout, DefaultDrainTimeout},
		{"Config.MaxClockSkew", c.MaxClockSkew, DefaultMaxClockSkew},
		{"Config.ClockCheckInterval", c.ClockCheckInterval, DefaultClockCheckInterval},
		{"Config.NSMTimeout", c.NSMTimeout, DefaultNSMTimeout},
	} {
		if d.v < 0 {
			return fieldErr(d.name, d.v, "negative (0 means the default, %v)", d.deflt)
		}
	}
	return nil
}
