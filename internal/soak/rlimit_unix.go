//go:build unix

package soak

import "syscall"

// fdLimit returns the soft limit on open file descriptors, or 0 if unknown.
// (The Go runtime raises the soft limit to the hard one at start-up on
// Linux and macOS.)
func fdLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur)
}
