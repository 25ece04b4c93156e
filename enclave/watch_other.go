//go:build !linux

package enclave

import (
	"errors"
	"syscall"
)

// readWatch exists on Linux only; elsewhere every request passes the read
// turn at once (see serveRequest).
type readWatch struct{}

type watchSys struct{}

func newReadWatch() (*readWatch, error) { return nil, errors.ErrUnsupported }

func (*readWatch) close()                          {}
func (*readWatch) register(*conn, syscall.RawConn) {}
func (*readWatch) unregister(*conn)                {}
func (*readWatch) arm(*conn) bool                  { return false }
func (*readWatch) disarm(*conn)                    {}
