package enclave

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// PROXY protocol version 2, binary header (HAProxy, "The PROXY protocol,
// Versions 1 & 2", section 2.2): a 12-byte signature, a version/command
// byte, a family/transport byte, a 2-byte big-endian length, then that many
// bytes of addresses and optional TLVs. parent.Ingress sends one at the
// start of each forwarded connection when its ProxyProtocol option is on.

// proxyV2Sig starts every v2 header.
var proxyV2Sig = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyV2Fixed = 16 // signature, version/command, family, length
	// MaxProxyHeaderV2 bounds the bytes after the fixed part (addresses and
	// TLVs) that a header may declare; a longer one is refused before it is
	// read.
	MaxProxyHeaderV2 = 512
	// DefaultProxyHeaderTimeout bounds the wait for a connection's header.
	DefaultProxyHeaderTimeout = 10 * time.Second
)

// ErrProxyHeader is wrapped by every error about a PROXY protocol header.
var ErrProxyHeader = errors.New("enclave: bad PROXY protocol v2 header")

// ParseProxyHeaderV2 reads one PROXY protocol v2 header from r and returns
// the client (source) address it carries. A LOCAL header, or one for a
// family other than TCP over IPv4 or IPv6, returns ok false: the connection
// carries no client address. Bytes after the header are left in r. The
// header comes from the parent, so the address is what the parent claims,
// not a verified fact.
func ParseProxyHeaderV2(r io.Reader) (src netip.AddrPort, ok bool, err error) {
	var fixed [proxyV2Fixed]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: reading the 16-byte fixed part: %w", ErrProxyHeader, err)
	}
	if !bytes.Equal(fixed[:12], proxyV2Sig) {
		return netip.AddrPort{}, false, fmt.Errorf("%w: no v2 signature (is the ingress's ProxyProtocol option on?)", ErrProxyHeader)
	}
	verCmd, fam := fixed[12], fixed[13]
	if verCmd>>4 != 2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: version %d, want 2", ErrProxyHeader, verCmd>>4)
	}
	cmd := verCmd & 0x0F
	if cmd > 1 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: command %d, want 0 (LOCAL) or 1 (PROXY)", ErrProxyHeader, cmd)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > MaxProxyHeaderV2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: declares %d bytes of addresses and TLVs, the limit is %d", ErrProxyHeader, n, MaxProxyHeaderV2)
	}
	var buf [MaxProxyHeaderV2]byte
	rest := buf[:n]
	if _, err := io.ReadFull(r, rest); err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: reading %d bytes of addresses: %w", ErrProxyHeader, n, err)
	}
	if cmd == 0 {
		return netip.AddrPort{}, false, nil // LOCAL: no address, whatever the family
	}
	switch fam {
	case 0x11: // AF_INET, STREAM
		if n < 12 {
			return netip.AddrPort{}, false, fmt.Errorf("%w: TCP over IPv4 needs 12 address bytes, got %d", ErrProxyHeader, n)
		}
		ip := netip.AddrFrom4([4]byte(rest[0:4]))
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest[8:10])), true, nil
	case 0x21: // AF_INET6, STREAM
		if n < 36 {
			return netip.AddrPort{}, false, fmt.Errorf("%w: TCP over IPv6 needs 36 address bytes, got %d", ErrProxyHeader, n)
		}
		ip := netip.AddrFrom16([16]byte(rest[0:16]))
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest[32:34])), true, nil
	}
	return netip.AddrPort{}, false, nil // other families: accepted, no address
}

// NewProxyV2Listener wraps ln, whose connections each begin with a PROXY
// protocol v2 header (from parent.Ingress with ProxyProtocol on). Accept
// does not wait for the header: it is read on the connection's first Read
// or RemoteAddr call, within timeout (0 means DefaultProxyHeaderTimeout),
// so a peer that never sends one cannot stall the accept loop. RemoteAddr
// then reports the client address from the header (a *net.TCPAddr), or
// the underlying address for a LOCAL header. A missing or malformed header
// makes Read fail with an error wrapping ErrProxyHeader; close the
// connection then. Remember that the parent writes the header: the address
// is for logs and rate limits, not for authentication.
func NewProxyV2Listener(ln net.Listener, timeout time.Duration) net.Listener {
	if timeout <= 0 {
		timeout = DefaultProxyHeaderTimeout
	}
	return &proxyV2Listener{Listener: ln, timeout: timeout}
}

type proxyV2Listener struct {
	net.Listener
	timeout time.Duration
}

func (l *proxyV2Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &proxyV2Conn{Conn: c, timeout: l.timeout}, nil
}

// proxyV2Conn reads its header once, before the first byte of data.
type proxyV2Conn struct {
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
func (c *proxyV2Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *proxyV2Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *proxyV2Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *proxyV2Conn) header() {
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
		src, ok, err := ParseProxyHeaderV2(c.br)
		_ = c.Conn.SetReadDeadline(callers)
		c.remote = c.Conn.RemoteAddr()
		if err != nil {
			c.err = err
			return
		}
		if ok {
			c.remote = net.TCPAddrFromAddrPort(src)
		}
	})
}

func (c *proxyV2Conn) Read(p []byte) (int, error) {
	c.header()
	if c.err != nil {
		return 0, c.err
	}
	return c.br.Read(p)
}

func (c *proxyV2Conn) RemoteAddr() net.Addr {
	c.header()
	return c.remote
}
