//go:build !linux

package transport

func spliceCount() int64 { return 0 }
