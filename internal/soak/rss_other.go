//go:build !linux

package soak

import "runtime"

const rssSource = "runtime.MemStats.Sys (not the RSS: /proc/self/status exists only on Linux)"

// readRSS returns the memory the Go runtime obtained from the OS, the
// closest portable stand-in for the resident set size.
func readRSS() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Sys
}
