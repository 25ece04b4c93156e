package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in      string
		want    Addr
		wantErr string
	}{
		{in: "vsock://any:5000", want: Addr{Network: NetworkVsock, CID: CIDAny, Port: 5000}},
		{in: "vsock://ANY:5000", want: Addr{Network: NetworkVsock, CID: CIDAny, Port: 5000}},
		{in: "vsock://parent:5001", want: Addr{Network: NetworkVsock, CID: 3, Port: 5001}},
		{in: "vsock://host:1", want: Addr{Network: NetworkVsock, CID: 2, Port: 1}},
		{in: "vsock://local:1", want: Addr{Network: NetworkVsock, CID: 1, Port: 1}},
		{in: "vsock://16:8000", want: Addr{Network: NetworkVsock, CID: 16, Port: 8000}},
		{in: "vsock://4294967295:4294967295", want: Addr{Network: NetworkVsock, CID: CIDAny, Port: 4294967295}},
		{in: "tcp://127.0.0.1:5000", want: Addr{Network: NetworkTCP, HostPort: "127.0.0.1:5000"}},
		{in: "tcp://[::1]:0", want: Addr{Network: NetworkTCP, HostPort: "[::1]:0"}},
		{in: "tcp://localhost:80", want: Addr{Network: NetworkTCP, HostPort: "localhost:80"}},
		{in: "tcp://:5000", want: Addr{Network: NetworkTCP, HostPort: ":5000"}},
		{in: "TCP://127.0.0.1:1", want: Addr{Network: NetworkTCP, HostPort: "127.0.0.1:1"}},
		{in: "tcp://[fe80::1%eth0]:80", want: Addr{Network: NetworkTCP, HostPort: "[fe80::1%eth0]:80"}},
		{in: "tcp://[::ffff:127.0.0.1]:80", want: Addr{Network: NetworkTCP, HostPort: "[::ffff:127.0.0.1]:80"}},
		{in: "tcp://exa_mple-1.example.com:443", want: Addr{Network: NetworkTCP, HostPort: "exa_mple-1.example.com:443"}},

		{in: "", wantErr: "missing scheme"},
		{in: "127.0.0.1:5000", wantErr: "missing scheme"},
		{in: "udp://127.0.0.1:5000", wantErr: `unknown scheme "udp"`},
		{in: "vsock://5000", wantErr: "vsock needs CID:PORT"},
		{in: "vsock://:5000", wantErr: "vsock needs CID:PORT"},
		{in: "vsock://3:", wantErr: "vsock needs CID:PORT"},
		{in: "vsock://guest:5000", wantErr: `CID "guest"`},
		{in: "vsock://-1:5000", wantErr: `CID "-1"`},
		{in: "vsock://4294967296:1", wantErr: `CID "4294967296"`},
		{in: "vsock://3:4294967296", wantErr: `port "4294967296"`},
		{in: "vsock://3:80:1", wantErr: `port "80:1"`},
		{in: "tcp://127.0.0.1", wantErr: "tcp needs HOST:PORT"},
		{in: "tcp://127.0.0.1:", wantErr: "missing port"},
		{in: "tcp://127.0.0.1:65536", wantErr: `port "65536"`},
		{in: "tcp://127.0.0.1:http", wantErr: `port "http"`},
		{in: "tcp://::1:80", wantErr: "tcp needs HOST:PORT"},
		{in: "tcp://127.0.0.1:80/path", wantErr: "unexpected path"},
		{in: "tcp://user@127.0.0.1:80", wantErr: "unexpected path"},
		{in: "tcp://127.0.0.1:80?x=1", wantErr: "unexpected path"},
		{in: "tcp://[127.0.0.1]:80", wantErr: "only IPv6 goes in brackets"},
		{in: "tcp://[localhost]:80", wantErr: "only IPv6 goes in brackets"},
		{in: "tcp://[]:80", wantErr: "only IPv6 goes in brackets"},
		{in: "tcp://[fe80::1%]:80", wantErr: "not a valid IPv6 address"},
		{in: "tcp://1.2.3.4%eth0:80", wantErr: "zone"},
		{in: "tcp://a\x00b:80", wantErr: "control character"},
		{in: "tcp://a\x7f:80", wantErr: "control character"},
		{in: "tcp://\xff:80", wantErr: "invalid UTF-8"},
		{in: "vsock://3\x00:5000", wantErr: "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddr(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseAddr(%q) = %+v, want error", tt.in, got)
				}
				msg := err.Error()
				if !strings.Contains(msg, tt.wantErr) || !strings.Contains(msg, strconv.Quote(tt.in)) || !strings.Contains(msg, "want vsock://CID:PORT") {
					t.Fatalf("error %q must contain %q, quote the address and state the expected form", msg, tt.wantErr)
				}
				if !errors.Is(err, ErrBadAddr) {
					t.Fatalf("error does not wrap ErrBadAddr")
				}
				if got != (Addr{}) {
					t.Fatalf("non-zero Addr %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddr(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAddr(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			// String round-trips.
			again, err := ParseAddr(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseAddr(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

// TestDialListenErrorsAreOpErrors: Dial and Listen promise *net.OpError,
// for a malformed address too (as net.Dial does), still matching ErrBadAddr.
func TestDialListenErrorsAreOpErrors(t *testing.T) {
	ctx := context.Background()
	for _, addr := range []string{"udp://x:1", "vsock://x:1", "tcp://[localhost]:1", "nonsense"} {
		c, derr := Dial(ctx, addr)
		if derr == nil {
			c.Close()
		}
		ln, lerr := Listen(ctx, addr)
		if lerr == nil {
			ln.Close()
		}
		for op, err := range map[string]error{"dial": derr, "listen": lerr} {
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != op {
				t.Errorf("%s %q: err = %T %v, want a *net.OpError with Op %q", op, addr, err, err, op)
			}
			if !errors.Is(err, ErrBadAddr) || !strings.Contains(fmt.Sprint(err), strconv.Quote(addr)) {
				t.Errorf("%s %q: err = %v, want ErrBadAddr quoting the address", op, addr, err)
			}
		}
	}
}

// ErrVsockUnsupported exists on every platform, so portable code that tests
// for it builds on Linux too.
var _ error = ErrVsockUnsupported

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"vsock://any:5000", "tcp://[::1]:0", "tcp://h:1", "vsock://3:", "x://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if a != (Addr{}) {
				t.Fatal("result with error")
			}
			return
		}
		b, err := ParseAddr(a.String())
		if err != nil || b != a {
			t.Fatalf("%q parsed to %+v, whose String %q parses to %+v, %v", s, a, a.String(), b, err)
		}
	})
}
