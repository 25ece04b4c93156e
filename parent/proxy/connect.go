package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
)

// ConnectError is a CONNECT request the proxy rejects; Status is the HTTP
// status sent back (400, 405, 408, 431…) and Reason a Reason* constant.
type ConnectError struct {
	Status int
	Reason string
	Detail string
}

func (e *ConnectError) Error() string {
	return "proxy: CONNECT request rejected (" + strconv.Itoa(e.Status) + " " + e.Reason + "): " + e.Detail
}

func badRequest(detail string) error {
	return &ConnectError{Status: http.StatusBadRequest, Reason: ReasonBadRequest, Detail: detail}
}

// ReadConnect reads one HTTP/1.x CONNECT request (request line and headers,
// up to and including the empty line) from br, reading at most max bytes,
// and returns the destination as a normalized host and a port. Bytes after
// the request stay in br (a client may send its TLS ClientHello at once).
// Header fields are checked for syntax and otherwise ignored. Errors:
// io.EOF when the peer sent nothing, *ConnectError otherwise (with an I/O
// error as Detail when the request was cut short).
func ReadConnect(br *bufio.Reader, max int) (host string, port int, err error) {
	total := 0
	first := true
	for {
		line, rerr := br.ReadSlice('\n')
		total += len(line)
		if total > max || rerr == bufio.ErrBufferFull {
			return "", 0, &ConnectError{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonHeaderTooLarge,
				Detail: "request line and headers exceed " + strconv.Itoa(max) + " bytes"}
		}
		if rerr != nil {
			if rerr == io.EOF && total == 0 {
				return "", 0, io.EOF
			}
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() {
				return "", 0, &ConnectError{Status: http.StatusRequestTimeout, Reason: ReasonTimeout, Detail: rerr.Error()}
			}
			return "", 0, badRequest("request cut short: " + rerr.Error())
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if first {
			first = false
			if host, port, err = parseRequestLine(line); err != nil {
				return "", 0, err
			}
			continue
		}
		if len(line) == 0 {
			return host, port, nil
		}
		if err := checkHeaderLine(line); err != nil {
			return "", 0, err
		}
	}
}

func parseRequestLine(line []byte) (string, int, error) {
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || len(method) == 0 || !isToken(method) {
		return "", 0, badRequest("malformed request line")
	}
	if string(version) != "HTTP/1.1" && string(version) != "HTTP/1.0" {
		return "", 0, badRequest("unsupported HTTP version")
	}
	if string(method) != http.MethodConnect {
		return "", 0, &ConnectError{Status: http.StatusMethodNotAllowed, Reason: ReasonMethod,
			Detail: "only CONNECT is served; got " + strconv.Quote(string(method))}
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f || c == '/' || c == '@' || c == '?' || c == '#' {
			return "", 0, badRequest("CONNECT target must be host:port")
		}
	}
	host, port, err := SplitHostPort(string(target))
	if err != nil {
		return "", 0, badRequest("CONNECT target: " + err.Error())
	}
	return host, port, nil
}

// checkHeaderLine accepts "Name: value" with a token name and a value free
// of control characters other than HTAB. Obsolete line folding is refused.
func checkHeaderLine(line []byte) error {
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok || len(name) == 0 || !isToken(name) {
		return badRequest("malformed header line")
	}
	for _, c := range value {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return badRequest("control character in header value")
		}
	}
	return nil
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || tokenTable[c] == 0 {
			return false
		}
	}
	return true
}

var tokenTable = func() (t [128]byte) {
	for c := byte('0'); c <= '9'; c++ {
		t[c] = 1
	}
	for c := byte('a'); c <= 'z'; c++ {
		t[c] = 1
		t[c-'a'+'A'] = 1
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = 1
	}
	return t
}()

// response returns a minimal HTTP/1.1 response with a short text body.
func response(status int, body string) []byte {
	b := make([]byte, 0, 128+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	if status == http.StatusMethodNotAllowed {
		b = append(b, "Allow: CONNECT\r\n"...)
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)+1), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	b = append(b, '\n')
	return b
}

var established = []byte("HTTP/1.1 200 Connection established\r\n\r\n")
