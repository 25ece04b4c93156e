package supervisor

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// ring is the slog.Handler an enclave's log sink writes to: it passes
// every record on and keeps the text of the last n of the current run, so
// that they can be logged again when the run ends.
type ring struct {
	next slog.Handler
	st   *ringState
}

type ringState struct {
	mu   sync.Mutex
	n    int
	recs []string // oldest first, at most n
	buf  bytes.Buffer
	text slog.Handler // formats into buf
}

func newRing(n int, next slog.Handler) *ring {
	st := &ringState{n: n}
	st.text = slog.NewTextHandler(&st.buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})
	return &ring{next: next, st: st}
}

func (r *ring) Enabled(context.Context, slog.Level) bool { return true }

func (r *ring) Handle(ctx context.Context, rec slog.Record) error {
	st := r.st
	st.mu.Lock()
	st.buf.Reset()
	_ = st.text.Handle(ctx, rec)
	line := strings.TrimSuffix(st.buf.String(), "\n")
	if len(st.recs) == st.n {
		copy(st.recs, st.recs[1:])
		st.recs = st.recs[:st.n-1]
	}
	st.recs = append(st.recs, line)
	st.mu.Unlock()
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

// WithAttrs and WithGroup apply to the records passed on; the kept text
// has only the record's own attributes.
func (r *ring) WithAttrs(as []slog.Attr) slog.Handler {
	return &ring{next: r.next.WithAttrs(as), st: r.st}
}

func (r *ring) WithGroup(name string) slog.Handler {
	return &ring{next: r.next.WithGroup(name), st: r.st}
}

// reset forgets the records of the previous run.
func (r *ring) reset() {
	r.st.mu.Lock()
	r.st.recs = nil
	r.st.mu.Unlock()
}

// snapshot returns a copy of the kept records, oldest first.
func (r *ring) snapshot() []string {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	return append([]string(nil), r.st.recs...)
}
