// Package proxyproto is the PROXY protocol version 2 (binary header) that
// the parent's ingress writes at the start of each forwarded connection and
// the enclave reads: Append writes a header, Parse reads one strictly and
// within fixed bounds, and NewListener strips it from each accepted
// connection lazily, on the connection's own goroutine.
//
// The format is HAProxy's "The PROXY protocol, Versions 1 & 2", section
// 2.2 (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt):
//
//	12 bytes  signature \r\n\r\n\0\r\nQUIT\n
//	1 byte    version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//	1 byte    address family (high nibble: 1 AF_INET, 2 AF_INET6) and
//	          transport protocol (low nibble: 1 STREAM)
//	2 bytes   length of the address block that follows, big-endian
//	address block, for TCP over IPv4 (12 bytes):
//	          source address (4), destination address (4),
//	          source port (2), destination port (2)
//	address block, for TCP over IPv6 (36 bytes):
//	          source address (16), destination address (16),
//	          source port (2), destination port (2)
//	then, within the declared length, optional TLVs (ignored here)
//
// A LOCAL header (command 0, family AF_UNSPEC, empty address block) tells
// the receiver that the connection carries no client address.
//
// The header comes from the parent, which the enclave does not trust: the
// address it carries is for logs and rate limits, never for authentication.
package proxyproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Signature starts every v2 header.
var Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// The version/command byte (13th) and family/transport byte (14th).
const (
	Version2      = 0x20 // high nibble of the version/command byte
	CommandLocal  = 0x00 // low nibble: no address, e.g. a health check
	CommandProxy  = 0x01 // low nibble: the block carries the client's address
	VersionLocal  = Version2 | CommandLocal
	VersionProxy  = Version2 | CommandProxy
	FamilyUnspec  = 0x00 // AF_UNSPEC, UNSPEC
	FamilyTCP4    = 0x11 // AF_INET, STREAM
	FamilyTCP6    = 0x21 // AF_INET6, STREAM
	FixedLen      = 16   // signature, version/command, family, length
	tcp4BlockLen  = 12
	tcp6BlockLen  = 36
	versionMask   = 0xF0
	commandMask   = 0x0F
	maxHeaderSize = FixedLen + MaxBlockLen
)

const (
	// MaxBlockLen bounds the bytes after the fixed part (addresses and
	// TLVs) that a header may declare; Parse refuses a longer one before
	// reading it.
	MaxBlockLen = 512
	// DefaultHeaderTimeout bounds NewListener's wait for a connection's
	// header when its timeout is 0.
	DefaultHeaderTimeout = 10 * time.Second
)

// ErrHeader is wrapped by every error about a PROXY protocol header.
var ErrHeader = errors.New("proxyproto: bad PROXY protocol v2 header")

// Header is what a parsed header says about its connection.
type Header struct {
	// Src is the client's address and Dst the address it connected to.
	// Both are the zero AddrPort when the header carries no address (LOCAL,
	// or a family other than TCP over IPv4 or IPv6). IPv6 headers give
	// 16-byte addresses, IPv4-mapped when Append mapped an IPv4 one.
	Src, Dst netip.AddrPort
}

// Append appends the header for a TCP connection from src (the client) to
// dst (the address it connected to) and returns the extended buffer. Two
// IPv4 (or IPv4-mapped IPv6) addresses give a TCP4 header, any other pair
// of IP addresses a TCP6 header (IPv4 mapped into IPv6); if either address
// is not a *net.TCPAddr with a valid IP the header is LOCAL, carrying no
// address.
func Append(b []byte, src, dst net.Addr) []byte {
	s, sok := tcpAddrPort(src)
	d, dok := tcpAddrPort(dst)
	b = append(b, Signature[:]...)
	if !sok || !dok {
		return append(b, VersionLocal, FamilyUnspec, 0, 0)
	}
	b = append(b, VersionProxy)
	if s.Addr().Is4() && d.Addr().Is4() {
		b = append(b, FamilyTCP4)
		b = binary.BigEndian.AppendUint16(b, tcp4BlockLen)
		a4, b4 := s.Addr().As4(), d.Addr().As4()
		b = append(b, a4[:]...)
		b = append(b, b4[:]...)
	} else {
		b = append(b, FamilyTCP6)
		b = binary.BigEndian.AppendUint16(b, tcp6BlockLen)
		a16, b16 := s.Addr().As16(), d.Addr().As16()
		b = append(b, a16[:]...)
		b = append(b, b16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, s.Port())
	return binary.BigEndian.AppendUint16(b, d.Port())
}

// tcpAddrPort returns a's address with IPv4-mapped IPv6 unmapped, and
// whether a is a TCP address with a valid IP.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// Parse reads exactly one header from r and returns what it says. It
// reads the 16-byte fixed part, then the declared block, never more, so
// the bytes after the header are left in r; it allocates nothing from the
// declared length, which may be at most MaxBlockLen. The signature,
// version 2 and command LOCAL or PROXY are required, and a TCP family's
// block must hold its addresses. A LOCAL header, or a PROXY header for
// another family, carries no address: Parse returns the zero Header and no
// error. Every error wraps ErrHeader.
func Parse(r io.Reader) (Header, error) {
	var buf [maxHeaderSize]byte
	fixed := buf[:FixedLen]
	if _, err := io.ReadFull(r, fixed); err != nil {
		return Header{}, fmt.Errorf("%w: reading the %d-byte fixed part: %w", ErrHeader, FixedLen, err)
	}
	if [12]byte(fixed[:12]) != Signature {
		return Header{}, fmt.Errorf("%w: no v2 signature (is the ingress's ProxyProtocol option on?)", ErrHeader)
	}
	verCmd, fam := fixed[12], fixed[13]
	if verCmd&versionMask != Version2 {
		return Header{}, fmt.Errorf("%w: version %d, want 2", ErrHeader, verCmd>>4)
	}
	cmd := verCmd & commandMask
	if cmd != CommandLocal && cmd != CommandProxy {
		return Header{}, fmt.Errorf("%w: command %d, want 0 (LOCAL) or 1 (PROXY)", ErrHeader, cmd)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > MaxBlockLen {
		return Header{}, fmt.Errorf("%w: declares %d bytes of addresses and TLVs, the limit is %d", ErrHeader, n, MaxBlockLen)
	}
	block := buf[FixedLen : FixedLen+n]
	if _, err := io.ReadFull(r, block); err != nil {
		return Header{}, fmt.Errorf("%w: reading %d bytes of addresses: %w", ErrHeader, n, err)
	}
	if cmd == CommandLocal {
		return Header{}, nil // no address, whatever the family
	}
	switch fam {
	case FamilyTCP4:
		if n < tcp4BlockLen {
			return Header{}, fmt.Errorf("%w: TCP over IPv4 needs %d address bytes, got %d", ErrHeader, tcp4BlockLen, n)
		}
		return Header{
			Src: netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), binary.BigEndian.Uint16(block[8:10])),
			Dst: netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), binary.BigEndian.Uint16(block[10:12])),
		}, nil
	case FamilyTCP6:
		if n < tcp6BlockLen {
			return Header{}, fmt.Errorf("%w: TCP over IPv6 needs %d address bytes, got %d", ErrHeader, tcp6BlockLen, n)
		}
		return Header{
			Src: netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), binary.BigEndian.Uint16(block[32:34])),
			Dst: netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), binary.BigEndian.Uint16(block[34:36])),
		}, nil
	}
	return Header{}, nil // other families: accepted, no address
}
