//go:build !linux

package supervisor

import "time"

// becomeSubreaper is a no-op outside Linux (Nitro parents run Linux).
func becomeSubreaper() error { return nil }

// reap is a no-op outside Linux.
func reap(pid int, wait time.Duration) (string, bool) { return "", true }
