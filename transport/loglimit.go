package transport

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultLogEvery is LogLimiter's interval when its Every is zero.
const DefaultLogEvery = 10 * time.Second

// LogLimiter rate-limits one kind of log line, typically one written for
// each refused or failed connection, so that a flood of them cannot flood
// the log: the first line passes at once, then at most one per Every, and
// a line that passes after others were held back says how many
// ("suppressed"). The zero value is ready to use and safe for concurrent
// use; a LogLimiter must not be copied after first use.
type LogLimiter struct {
	// Every is the least time between two lines; zero means
	// DefaultLogEvery.
	Every time.Duration

	mu         sync.Mutex
	last       time.Time // when the last line passed; zero: none yet
	suppressed uint64    // lines held back since then
}

// Allow reports whether a line may be written now and, when it may, how
// many lines were held back since the previous one. A caller that gets ok
// must write its line (the count restarts).
func (l *LogLimiter) Allow() (ok bool, suppressed uint64) {
	every := l.Every
	if every <= 0 {
		every = DefaultLogEvery
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return false, 0
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return true, suppressed
}

// Log writes msg with args at level to logger when Allow lets it through,
// adding "suppressed", N when N lines were held back before it, and
// reports whether it wrote. A nil logger writes nothing, but the line
// still counts.
func (l *LogLimiter) Log(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, args ...any) bool {
	ok, n := l.Allow()
	if !ok || logger == nil {
		return ok
	}
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n) // never into the caller's array
	}
	logger.Log(ctx, level, msg, args...)
	return true
}
