package soak

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Defaults of Options.
const (
	DefaultConcurrency    = 64
	MaxConcurrency        = 1000
	DefaultPoolSize       = 4
	DefaultMaxBody        = 64 << 10
	DefaultStreams        = 100
	DefaultMaxStreamBytes = 4 << 20
	DefaultSlowloris      = 1000
	DefaultTricklers      = 1000
	DefaultPipeliners     = 3
	DefaultGoodP99        = 100 * time.Millisecond
	DefaultProgressEvery  = 5 * time.Second
	DefaultSettleTimeout  = 10 * time.Second
	// DefaultStreamTimeout bounds one proxied stream, from dial to the
	// sink's answer.
	DefaultStreamTimeout = 30 * time.Second
)

// ErrOptions is wrapped by every error of Options.Validate.
var ErrOptions = errors.New("soak: invalid options")

// Options configure Run. Zero fields take the defaults documented on them;
// negative values are errors.
type Options struct {
	// Duration is how long the loads run (required, > 0).
	Duration time.Duration

	// Concurrency is the number of goroutines making echo calls at once
	// (default 64, at most 1000).
	Concurrency int
	// PoolSize is the number of connections of the shared parent.Client
	// (default 4, at most 64).
	PoolSize int
	// MaxBody is the largest echo body in bytes (default 64 KiB, at most
	// 512 KiB so that request and response fit the default 1 MiB frame).
	// Body sizes are uniform in 0..MaxBody.
	MaxBody int

	// Streams is the number of proxied streams open at once (default 100).
	Streams int
	// MaxStreamBytes is the largest payload of one stream (default 4 MiB).
	// Sizes are uniform in 0..MaxStreamBytes.
	MaxStreamBytes int64
	// StreamTimeout bounds one stream from dial to the sink's answer
	// (default 30s); a stream that exceeds it fails and its bytes count as
	// lost.
	StreamTimeout time.Duration

	// Slowloris is the number of stalled connections held open to the
	// enclave server for the whole run (default 1000). Run lowers it, with
	// a note in the Report, when the process's file descriptor limit is too
	// low for it.
	Slowloris int

	// Tricklers is the number of trickling connections held against the
	// ingress in the ingress phase (default 1000). Run lowers it, with a
	// note, when the file descriptor limit is too low (each costs four).
	Tricklers int
	// Pipeliners is the number of connections pipelining 1 MiB requests
	// without reading in the pipeliners phase (default 3).
	Pipeliners int
	// GoodP99 is the good client's largest acceptable p99 latency in each
	// attack phase (default 100ms); a higher one fails the run.
	GoodP99 time.Duration

	// ProgressEvery is the interval of progress lines written to Out
	// (default 5s).
	ProgressEvery time.Duration
	// SettleTimeout bounds the wait, after everything was stopped, for the
	// goroutine count to return to its starting value (default 10s).
	SettleTimeout time.Duration

	// Seed seeds the random bodies and payloads; 0 picks one at random.
	// The seed used is in the Report.
	Seed uint64

	// Out receives the progress lines; nil discards them.
	Out io.Writer
	// Logger receives the components' logs (enclave server, client,
	// proxy); nil discards them.
	Logger *slog.Logger
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("%w: %s is %v; want %s", ErrOptions, field, v, want)
	}
	switch {
	case o.Duration <= 0:
		return bad("Duration", o.Duration, "a positive duration")
	case o.Concurrency < 0 || o.Concurrency > MaxConcurrency:
		return bad("Concurrency", o.Concurrency, fmt.Sprintf("1..%d, or 0 for %d", MaxConcurrency, DefaultConcurrency))
	case o.PoolSize < 0 || o.PoolSize > 64:
		return bad("PoolSize", o.PoolSize, fmt.Sprintf("1..64, or 0 for %d", DefaultPoolSize))
	case o.MaxBody < 0 || o.MaxBody > 512<<10:
		return bad("MaxBody", o.MaxBody, fmt.Sprintf("1..%d bytes, or 0 for %d", 512<<10, DefaultMaxBody))
	case o.Streams < 0:
		return bad("Streams", o.Streams, fmt.Sprintf("a positive count, or 0 for %d", DefaultStreams))
	case o.MaxStreamBytes < 0:
		return bad("MaxStreamBytes", o.MaxStreamBytes, fmt.Sprintf("a positive byte count, or 0 for %d", DefaultMaxStreamBytes))
	case o.StreamTimeout < 0:
		return bad("StreamTimeout", o.StreamTimeout, "a positive duration, or 0 for the default")
	case o.Slowloris < 0:
		return bad("Slowloris", o.Slowloris, fmt.Sprintf("a positive count, or 0 for %d", DefaultSlowloris))
	case o.Tricklers < 0:
		return bad("Tricklers", o.Tricklers, fmt.Sprintf("a positive count, or 0 for %d", DefaultTricklers))
	case o.Pipeliners < 0:
		return bad("Pipeliners", o.Pipeliners, fmt.Sprintf("a positive count, or 0 for %d", DefaultPipeliners))
	case o.GoodP99 < 0:
		return bad("GoodP99", o.GoodP99, "a positive duration, or 0 for the default")
	case o.ProgressEvery < 0:
		return bad("ProgressEvery", o.ProgressEvery, "a positive duration, or 0 for the default")
	case o.SettleTimeout < 0:
		return bad("SettleTimeout", o.SettleTimeout, "a positive duration, or 0 for the default")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.PoolSize == 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Streams == 0 {
		o.Streams = DefaultStreams
	}
	if o.MaxStreamBytes == 0 {
		o.MaxStreamBytes = DefaultMaxStreamBytes
	}
	if o.StreamTimeout == 0 {
		o.StreamTimeout = DefaultStreamTimeout
	}
	if o.Slowloris == 0 {
		o.Slowloris = DefaultSlowloris
	}
	if o.Tricklers == 0 {
		o.Tricklers = DefaultTricklers
	}
	if o.Pipeliners == 0 {
		o.Pipeliners = DefaultPipeliners
	}
	if o.GoodP99 == 0 {
		o.GoodP99 = DefaultGoodP99
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.SettleTimeout == 0 {
		o.SettleTimeout = DefaultSettleTimeout
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
