package enclave

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultConsoleQueue is how many console writes wait for the console
// (see NewConsoleWriter) before further ones are dropped.
const DefaultConsoleQueue = 1024

// ConsoleWriter makes writes to the enclave console (stderr) asynchronous:
// Write copies its bytes into a bounded queue and returns at once, and one
// goroutine writes them to the console in order. When the console does not
// keep up (stderr is a pipe nobody reads, a slow serial console), the
// queue fills and further writes are dropped and counted, never waited
// for: logging never blocks request handling. slog's handlers write one
// record per Write, so Dropped counts records.
//
// Call Close to flush the queue and stop the goroutine.
type ConsoleWriter struct {
	w       io.Writer
	ch      chan []byte
	mu      sync.Mutex // guards closed against Write's send
	closed  bool
	done    chan struct{}
	dropped atomic.Uint64
}

// NewConsoleWriter starts writing to w through a queue of queue writes (0
// means DefaultConsoleQueue).
func NewConsoleWriter(w io.Writer, queue int) *ConsoleWriter {
	if queue <= 0 {
		queue = DefaultConsoleQueue
	}
	c := &ConsoleWriter{w: w, ch: make(chan []byte, queue), done: make(chan struct{})}
	go c.run()
	return c
}

// Write queues a copy of p and returns len(p), nil; when the queue is full
// or the writer is closed, p is dropped and counted.
func (c *ConsoleWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.dropped.Add(1)
		return len(p), nil
	}
	select {
	case c.ch <- append([]byte(nil), p...):
	default:
		c.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped returns how many writes were dropped.
func (c *ConsoleWriter) Dropped() uint64 { return c.dropped.Load() }

func (c *ConsoleWriter) run() {
	defer close(c.done)
	for p := range c.ch {
		// A console error (closed stderr) is not worth more than the
		// record: the record is gone either way.
		_, _ = c.w.Write(p)
	}
}

// Close stops accepting writes and waits until the queued ones have been
// written or ctx is done. When ctx ends first and the console supports
// write deadlines (an *os.File pipe does), the blocked write is cut short
// so the goroutine ends; otherwise it ends when the console takes the
// write. Later writes are dropped. Close is safe to call more than once.
func (c *ConsoleWriter) Close(ctx context.Context) error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.ch)
	}
	c.mu.Unlock()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	}
	if d, ok := c.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		if d.SetWriteDeadline(time.Now().Add(-time.Second)) == nil {
			// Drop what is left, so the goroutine ends promptly.
			for range c.ch {
				c.dropped.Add(1)
			}
			<-c.done
		}
	}
	return fmt.Errorf("enclave: console closed before every queued record was written: %w", ctx.Err())
}

// ConsoleHandler is slog's text handler writing to a ConsoleWriter: the
// enclave's console log when there is no log sink. It reports its dropped
// records through ConsoleDropped, which Server.Stats reads from
// Config.Logger's handler.
type ConsoleHandler struct {
	slog.Handler
	cw *ConsoleWriter
}

// NewConsoleHandler returns a text handler on an asynchronous console over
// w (see ConsoleWriter) at level (nil: slog.LevelInfo). Close it to flush.
func NewConsoleHandler(w io.Writer, level slog.Leveler) *ConsoleHandler {
	cw := NewConsoleWriter(w, 0)
	return &ConsoleHandler{Handler: slog.NewTextHandler(cw, &slog.HandlerOptions{Level: level}), cw: cw}
}

// NewConsoleJSONHandler is NewConsoleHandler writing slog JSON lines.
func NewConsoleJSONHandler(w io.Writer, level slog.Leveler) *ConsoleHandler {
	cw := NewConsoleWriter(w, 0)
	return &ConsoleHandler{Handler: slog.NewJSONHandler(cw, &slog.HandlerOptions{Level: level}), cw: cw}
}

// WithAttrs returns a ConsoleHandler sharing the console.
func (h *ConsoleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &ConsoleHandler{Handler: h.Handler.WithAttrs(attrs), cw: h.cw}
}

// WithGroup returns a ConsoleHandler sharing the console.
func (h *ConsoleHandler) WithGroup(name string) slog.Handler {
	return &ConsoleHandler{Handler: h.Handler.WithGroup(name), cw: h.cw}
}

// ConsoleDropped returns how many records the console dropped.
func (h *ConsoleHandler) ConsoleDropped() uint64 { return h.cw.Dropped() }

// Close flushes the console; see ConsoleWriter.Close.
func (h *ConsoleHandler) Close(ctx context.Context) error { return h.cw.Close(ctx) }

// consoleDropper is implemented by the handlers whose console drops
// records (LogHandler, ConsoleHandler).
type consoleDropper interface{ ConsoleDropped() uint64 }
