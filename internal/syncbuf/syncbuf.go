// Package syncbuf holds Buffer, the one goroutine-safe buffer that the
// tests and the development harness capture logs and command output in.
// It is test and development tooling: no production package imports it
// (internal/deptest checks).
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that servers, loggers and a reading test may
// use at the same time. The zero value is an empty buffer ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
