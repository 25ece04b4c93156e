//go:build !linux

package transport

// fastPath is Linux only: elsewhere Relay reads through a buffer held
// while it waits, and never splices.
type fastPath struct{}

func (fastPath) ok() bool                              { return false }
func (*fastPath) read(*half) (n, avail int, err error) { panic("transport: no fast path here") }
func (*fastPath) splice(*half, int) (int64, error)     { return 0, nil }
func (*fastPath) noSplice()                            {}

func (h *half) setup() {}
