package parent

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// PROXY protocol version 2, binary header, as specified by HAProxy in
// "The PROXY protocol, Versions 1 & 2", section 2.2
// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt):
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
//
// A LOCAL header (command 0, family AF_UNSPEC, empty address block) tells the
// receiver that the connection carries no client address.

// proxyV2Sig is the 12-byte signature that starts every v2 header.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyV2VersionProxy = 0x21 // version 2, command PROXY
	proxyV2VersionLocal = 0x20 // version 2, command LOCAL
	proxyV2TCP4         = 0x11 // AF_INET, STREAM
	proxyV2TCP6         = 0x21 // AF_INET6, STREAM
	proxyV2Unspec       = 0x00 // AF_UNSPEC, UNSPEC
	proxyV2HeaderLen    = 16
)

// AppendProxyHeaderV2 appends the PROXY protocol v2 header for a TCP
// connection from src (the client) to dst (the address it connected to) and
// returns the extended buffer. Two IPv4 (or IPv4-mapped IPv6) addresses give
// a TCP4 header, any other pair of IP addresses a TCP6 header (IPv4 mapped
// into IPv6); if either address is not a *net.TCPAddr with a valid IP the
// header is LOCAL, carrying no address.
func AppendProxyHeaderV2(b []byte, src, dst net.Addr) []byte {
	s, sok := tcpAddrPort(src)
	d, dok := tcpAddrPort(dst)
	b = append(b, proxyV2Sig[:]...)
	if !sok || !dok {
		return append(b, proxyV2VersionLocal, proxyV2Unspec, 0, 0)
	}
	b = append(b, proxyV2VersionProxy)
	if s.Addr().Is4() && d.Addr().Is4() {
		b = append(b, proxyV2TCP4, 0, 12)
		a4, b4 := s.Addr().As4(), d.Addr().As4()
		b = append(b, a4[:]...)
		b = append(b, b4[:]...)
	} else {
		b = append(b, proxyV2TCP6, 0, 36)
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
