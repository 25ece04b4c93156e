package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

type testReader struct {
	r  *bytes.Reader
	br *bufio.Reader
}

func newTestReader(b []byte) *testReader {
	r := bytes.NewReader(b)
	return &testReader{r: r, br: bufio.NewReaderSize(r, DefaultMaxHeaderBytes)}
}

func (t *testReader) reset(b []byte) {
	t.r.Reset(b)
	t.br.Reset(t.r)
}

func TestReadConnect(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		host   string
		port   int
		status int // 0: success
		rest   string
	}{
		{name: "minimal", in: "CONNECT example.com:443 HTTP/1.1\r\n\r\n", host: "example.com", port: 443},
		{name: "headers", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic x\r\n\r\n", host: "example.com", port: 443},
		{name: "HTTP/1.0, bare LF", in: "CONNECT Example.COM.:8443 HTTP/1.0\n\n", host: "example.com", port: 8443},
		{name: "IPv6", in: "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", host: "2001:db8::1", port: 443},
		{name: "IPv4-mapped", in: "CONNECT [::ffff:10.0.0.1]:443 HTTP/1.1\r\n\r\n", host: "10.0.0.1", port: 443},
		{name: "early data stays buffered", in: "CONNECT a.b:1 HTTP/1.1\r\n\r\n\x16\x03\x01", host: "a.b", port: 1, rest: "\x16\x03\x01"},
		{name: "GET", in: "GET / HTTP/1.1\r\n\r\n", status: 405},
		{name: "lower-case connect", in: "connect a.b:1 HTTP/1.1\r\n\r\n", status: 405},
		{name: "absolute URI", in: "CONNECT http://a.b:1/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "userinfo", in: "CONNECT u@a.b:1 HTTP/1.1\r\n\r\n", status: 400},
		{name: "no port", in: "CONNECT a.b HTTP/1.1\r\n\r\n", status: 400},
		{name: "port 0", in: "CONNECT a.b:0 HTTP/1.1\r\n\r\n", status: 400},
		{name: "port too big", in: "CONNECT a.b:65536 HTTP/1.1\r\n\r\n", status: 400},
		{name: "port sign", in: "CONNECT a.b:+443 HTTP/1.1\r\n\r\n", status: 400},
		{name: "zone", in: "CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n", status: 400},
		{name: "two spaces", in: "CONNECT  a.b:1 HTTP/1.1\r\n\r\n", status: 400},
		{name: "HTTP/2", in: "CONNECT a.b:1 HTTP/2.0\r\n\r\n", status: 400},
		{name: "no version", in: "CONNECT a.b:1\r\n\r\n", status: 400},
		{name: "empty line first", in: "\r\n\r\n", status: 400},
		{name: "header without colon", in: "CONNECT a.b:1 HTTP/1.1\r\nfoo\r\n\r\n", status: 400},
		{name: "header folding", in: "CONNECT a.b:1 HTTP/1.1\r\nA: b\r\n c\r\n\r\n", status: 400},
		{name: "header with NUL", in: "CONNECT a.b:1 HTTP/1.1\r\nA: b\x00\r\n\r\n", status: 400},
		{name: "bad host chars", in: "CONNECT a_b!:1 HTTP/1.1\r\n\r\n", status: 400},
		{name: "cut short", in: "CONNECT a.b:1 HTTP/1.1\r\nHost: a", status: 400},
		{name: "oversized header", in: "CONNECT a.b:1 HTTP/1.1\r\nX: " + strings.Repeat("y", 9000) + "\r\n\r\n", status: 431},
		{name: "many headers", in: "CONNECT a.b:1 HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 2000) + "\r\n", status: 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestReader([]byte(tt.in))
			host, port, err := ReadConnect(r.br, DefaultMaxHeaderBytes)
			if tt.status != 0 {
				var ce *ConnectError
				if !errors.As(err, &ce) || ce.Status != tt.status {
					t.Fatalf("err %v, want status %d", err, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if host != tt.host || port != tt.port {
				t.Errorf("got %s %d, want %s %d", host, port, tt.host, tt.port)
			}
			rest, _ := io.ReadAll(r.br)
			if string(rest) != tt.rest {
				t.Errorf("rest %q, want %q", rest, tt.rest)
			}
		})
	}
	if _, _, err := ReadConnect(newTestReader(nil).br, 100); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
}

func TestResponse(t *testing.T) {
	got := string(response(405, "Method Not Allowed"))
	want := "HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 19\r\n\r\nMethod Not Allowed\n"
	if got != want {
		t.Errorf("got %q", got)
	}
}

// FuzzConnectRequest: ReadConnect never panics, never reads past its
// limit, and returns a destination that round-trips.
func FuzzConnectRequest(f *testing.F) {
	for _, s := range []string{
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT [::1]:443 HTTP/1.0\n\n",
		"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nA: \tb\r\n\r\nrest",
		"\r\n",
	} {
		f.Add([]byte(s))
	}
	const max = 512
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		br := bufio.NewReaderSize(r, 256)
		host, port, err := ReadConnect(br, max)
		consumed := len(data) - r.Len() - br.Buffered()
		if err != nil {
			var ce *ConnectError
			if err != io.EOF && !errors.As(err, &ce) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if consumed > max {
			t.Fatalf("consumed %d bytes, limit %d", consumed, max)
		}
		h, p, err := SplitHostPort(net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil || h != host || p != port {
			t.Fatalf("destination %q %d does not round-trip: %q %d %v", host, port, h, p, err)
		}
	})
}
