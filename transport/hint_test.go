package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string // substring; "" means no hint
	}{
		{&net.OpError{Op: "listen", Net: NetworkVsock, Err: syscall.EPERM}, "tcp://127.0.0.1:PORT"},
		{&net.OpError{Op: "listen", Net: NetworkVsock, Err: ErrVsockUnsupported}, "vsock is not usable here"},
		{&net.OpError{Op: "listen", Net: NetworkVsock, Err: syscall.EADDRINUSE}, "already listens"},
		{&net.OpError{Op: "dial", Net: NetworkVsock, Err: syscall.ETIMEDOUT}, "nitro-cli describe-enclaves"},
		{&net.OpError{Op: "dial", Net: NetworkVsock, Err: syscall.ECONNRESET}, "is the enclave running"},
		{fmt.Errorf("parent: dialing: %w", &net.OpError{Op: "dial", Net: NetworkVsock, Err: context.DeadlineExceeded}), "is the enclave running"},
		{&net.OpError{Op: "dial", Net: NetworkTCP, Err: syscall.ECONNREFUSED}, ""},
		{errors.New("other"), ""},
		{nil, ""},
	} {
		if got := Hint(tc.err); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("Hint(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
