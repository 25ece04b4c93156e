//go:build !unix

package soak

// fdLimit returns 0: the limit is unknown on this platform.
func fdLimit() uint64 { return 0 }
