package devharness

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// capturedRecord is one log record with its attributes flattened to
// dotted keys ("attrs.method").
type capturedRecord struct {
	msg   string
	attrs map[string]string
}

// captureHandler keeps every record it handles, so that the harness can
// check what reached the log sink or what the proxy logged, and optionally
// prints them.
type captureHandler struct {
	*logStore
	prefix string            // group prefix of this handler view
	pre    map[string]string // attributes added with WithAttrs, flattened
}

// logStore holds the records of a captureHandler and its derived views.
type logStore struct {
	mu      sync.Mutex
	records []capturedRecord
	changed chan struct{} // closed and replaced on every record
	print   slog.Handler  // nil: do not print
}

func newCaptureHandler(w io.Writer) *captureHandler {
	st := &logStore{changed: make(chan struct{})}
	if w != nil {
		st.print = slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return &captureHandler{logStore: st}
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := capturedRecord{msg: r.Message, attrs: map[string]string{}}
	for k, v := range h.pre {
		rec.attrs[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		flatten(rec.attrs, h.prefix, a)
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, rec)
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	if h.print != nil {
		return h.print.Handle(ctx, r)
	}
	return nil
}

func (h *captureHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	pre := make(map[string]string, len(h.pre)+len(attrs))
	for k, v := range h.pre {
		pre[k] = v
	}
	for _, a := range attrs {
		flatten(pre, h.prefix, a)
	}
	return &captureHandler{logStore: h.logStore, prefix: h.prefix, pre: pre}
}

func (h *captureHandler) WithGroup(name string) slog.Handler {
	return &captureHandler{logStore: h.logStore, prefix: h.prefix + name + ".", pre: h.pre}
}

func flatten(m map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			flatten(m, p, g)
		}
		return
	}
	m[prefix+a.Key] = v.String()
}

// find returns attribute out of the first record with message msg whose
// attribute key equals value, or "".
func (h *logStore) find(msg, key, value, out string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.msg == msg && r.attrs[key] == value {
			return r.attrs[out]
		}
	}
	return ""
}

func (h *logStore) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}

// wait blocks until a record satisfies match or ctx is done.
func (h *logStore) wait(ctx context.Context, match func(capturedRecord) bool) error {
	seen := 0
	for {
		h.mu.Lock()
		for ; seen < len(h.records); seen++ {
			if match(h.records[seen]) {
				h.mu.Unlock()
				return nil
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
