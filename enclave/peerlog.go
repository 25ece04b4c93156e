package enclave

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Rate of the records a peer can cause (bad requests, failed requests,
// hostile or timed-out connections): peerLogBurst at once, then
// peerLogRate per second. Without a bound, a peer sending junk as fast as
// it can would push every other record out of the log stream's buffer.
const (
	peerLogRate  = 20
	peerLogBurst = 100
)

// peerLimiter is a token bucket for peer-caused log records.
type peerLimiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed uint64
}

// allow takes a token if there is one. When it does, it also returns how
// many records were suppressed since the last one allowed.
func (l *peerLimiter) allow(now time.Time) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = peerLogBurst
	} else {
		l.tokens = min(peerLogBurst, l.tokens+now.Sub(l.last).Seconds()*peerLogRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// peerLog logs a record caused by a peer, rate-limited; errors (a handler
// panic, an encoding failure) are never suppressed. An allowed record
// carries the number suppressed before it.
func (s *Server) peerLog(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	if level < slog.LevelError {
		ok, n := s.peerLogs.allow(time.Now())
		if !ok {
			s.suppressedLogs.Add(1)
			return
		}
		if n > 0 {
			args = append(args, "suppressed_before", n)
		}
	}
	s.log.Log(ctx, level, msg, args...)
}
