package enclave

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Bounds on retries of reads and writes that made no progress.
const (
	// maxZeroReads is how many consecutive (0, nil) reads are tolerated
	// before the connection is closed.
	maxZeroReads = 16
	// maxEINTR is how many consecutive EINTR results are retried before the
	// connection is closed; a real interrupted call succeeds on retry.
	maxEINTR = 128
)

// ErrNoProgress is wrapped by the error that closes a connection whose reads
// or writes repeatedly returned nothing and no error. It matches
// io.ErrNoProgress.
var ErrNoProgress = fmt.Errorf("enclave: peer made no progress: %w", io.ErrNoProgress)

// isEINTR reports whether err is an interrupted system call, also when
// wrapped in *net.OpError or *os.SyscallError.
func isEINTR(err error) bool { return errors.Is(err, syscall.EINTR) }

// retryConn wraps a net.Conn so that reads and writes interrupted by EINTR
// are retried, (0, nil) reads are retried a bounded number of times and then
// reported as ErrNoProgress (never as EOF), and short writes are completed.
type retryConn struct {
	net.Conn
}

func (c retryConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	zeros, intr := 0, 0
	for {
		n, err := c.Conn.Read(p)
		switch {
		case n > 0:
			if isEINTR(err) {
				err = nil
			}
			return n, err
		case err == nil:
			zeros++
			if zeros >= maxZeroReads {
				return 0, fmt.Errorf("%w: %d consecutive zero-length reads", ErrNoProgress, zeros)
			}
		case isEINTR(err):
			intr++
			if intr >= maxEINTR {
				return 0, fmt.Errorf("%w: %d consecutive interrupted reads: %w", ErrNoProgress, intr, err)
			}
		default:
			return 0, err
		}
	}
}

func (c retryConn) Write(p []byte) (int, error) {
	written, zeros, intr := 0, 0, 0
	for written < len(p) {
		n, err := c.Conn.Write(p[written:])
		if n < 0 || n > len(p)-written {
			return written, fmt.Errorf("enclave: connection write returned %d for %d bytes", n, len(p)-written)
		}
		written += n
		switch {
		case n > 0 && (err == nil || isEINTR(err)):
			zeros, intr = 0, 0
		case err == nil:
			zeros++
			if zeros >= maxZeroReads {
				return written, fmt.Errorf("%w: %d consecutive zero-length writes", ErrNoProgress, zeros)
			}
		case isEINTR(err):
			intr++
			if intr >= maxEINTR {
				return written, fmt.Errorf("%w: %d consecutive interrupted writes: %w", ErrNoProgress, intr, err)
			}
		default:
			return written, err
		}
	}
	return written, nil
}
