package transport

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// Hint returns one sentence of advice for a failed vsock Listen or Dial:
// what usually causes the error and what to try. It returns "" for any
// other error. Commands print it after the error itself.
func Hint(err error) string {
	var op *net.OpError
	if !errors.As(err, &op) || op.Net != NetworkVsock {
		return ""
	}
	switch op.Op {
	case "listen":
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return "another process already listens on that vsock port: stop it, or pick another port"
		case errors.Is(err, ErrVsockUnsupported), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES),
			errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EADDRNOTAVAIL),
			errors.Is(err, os.ErrNotExist):
			return "vsock is not usable here (no /dev/vsock, no permission, or not an enclave-enabled instance): for development, listen on a tcp://127.0.0.1:PORT address instead"
		}
	case "dial":
		switch {
		case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
			errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENODEV), errors.Is(err, context.DeadlineExceeded):
			return "nothing answers at that CID and port: is the enclave running (nitro-cli describe-enclaves shows its EnclaveCID) and listening on that port? For development, use a tcp://127.0.0.1:PORT address"
		case errors.Is(err, ErrVsockUnsupported), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.EPERM):
			return "vsock is not usable here (no /dev/vsock or not an enclave-enabled instance): for development, use a tcp://127.0.0.1:PORT address"
		}
	}
	return ""
}
