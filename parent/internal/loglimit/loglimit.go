// Package loglimit lets one warning through per interval, so that a flood
// of refused or failed connections at the parent's ingress or log sink
// does not flood the log.
package loglimit

import (
	"sync/atomic"
	"time"
)

// Interval is the least time between two warnings a Limiter lets through.
const Interval = 10 * time.Second

// Limiter lets one warning through per Interval. Its zero value is ready
// to use and lets the first one through; it is safe for concurrent use.
type Limiter struct{ last atomic.Int64 }

// Allow reports whether a warning may be logged now.
func (l *Limiter) Allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return (last == 0 || now-last >= int64(Interval)) && l.last.CompareAndSwap(last, now)
}
