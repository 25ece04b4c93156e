package proxyproto

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// NewListener wraps ln, whose connections each begin with a PROXY
// protocol v2 header (from the parent's ingress with ProxyProtocol on).
// Accept does not wait for the header: it is read on the connection's
// first Read or RemoteAddr call, within timeout (0 means
// DefaultHeaderTimeout, and a caller's earlier read deadline bounds it
// too), so a peer that never sends one cannot stall the accept loop.
// RemoteAddr then reports the client address from the header (a
// *net.TCPAddr), or the underlying address for a header without one. A
// missing or malformed header makes Read fail with an error wrapping
// ErrHeader; close the connection then.
func NewListener(ln net.Listener, timeout time.Duration) net.Listener {
	if timeout <= 0 {
		timeout = DefaultHeaderTimeout
	}
	return &listener{Listener: ln, timeout: timeout}
}

type listener struct {
	net.Listener
	timeout time.Duration
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, timeout: l.timeout}, nil
}

// conn reads its header once, before the first byte of data.
type conn struct {
	net.Conn
	timeout time.Duration

	once   sync.Once
	br     *bufio.Reader
	remote net.Addr
	err    error

	mu       sync.Mutex
	deadline time.Time // the caller's read deadline, restored after the header
}

// SetReadDeadline records the caller's deadline so the header read, which
// sets its own, can restore it.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline records the caller's read deadline as SetReadDeadline does.
func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *conn) header() {
	c.once.Do(func() {
		// The header is small: a reader of the minimum size keeps what
		// follows it for Read without over-reading much.
		c.br = bufio.NewReaderSize(c.Conn, 64)
		c.mu.Lock()
		callers := c.deadline
		c.mu.Unlock()
		d := time.Now().Add(c.timeout)
		if !callers.IsZero() && callers.Before(d) {
			d = callers
		}
		_ = c.Conn.SetReadDeadline(d)
		h, err := Parse(c.br)
		_ = c.Conn.SetReadDeadline(callers)
		c.remote = c.Conn.RemoteAddr()
		if err != nil {
			c.err = err
			return
		}
		if h.Src.IsValid() {
			c.remote = net.TCPAddrFromAddrPort(h.Src)
		}
	})
}

// Read reads the header first, on the caller's goroutine, then data.
func (c *conn) Read(p []byte) (int, error) {
	c.header()
	if c.err != nil {
		return 0, c.err
	}
	return c.br.Read(p)
}

// RemoteAddr is the header's client address, once the header is read.
func (c *conn) RemoteAddr() net.Addr {
	c.header()
	return c.remote
}
