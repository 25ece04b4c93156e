package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Well-known vsock context IDs (see vsock(7)).
const (
	CIDHypervisor uint32 = 0          // VMADDR_CID_HYPERVISOR
	CIDLocal      uint32 = 1          // VMADDR_CID_LOCAL
	CIDHost       uint32 = 2          // VMADDR_CID_HOST
	CIDParent     uint32 = 3          // the parent instance, as seen from a Nitro enclave
	CIDAny        uint32 = 0xFFFFFFFF // VMADDR_CID_ANY: listen on every local CID
)

// Networks understood by ParseAddr.
const (
	NetworkVsock = "vsock"
	NetworkTCP   = "tcp"
)

// ErrBadAddr is wrapped by every address parsing error.
var ErrBadAddr = errors.New("transport: bad address")

// ErrVsockUnsupported is returned for vsock addresses on systems other than
// Linux. It is defined everywhere so that portable code can test for it.
var ErrVsockUnsupported = errors.New("transport: vsock is only available on Linux; use a tcp:// address for local development")

// Addr is a parsed transport address.
type Addr struct {
	// Network is NetworkVsock or NetworkTCP.
	Network string
	// CID and Port are set for vsock addresses.
	CID  uint32
	Port uint32
	// HostPort is set for TCP addresses, in net.JoinHostPort form.
	HostPort string
}

// String formats a as a URL that ParseAddr accepts; named CIDs are printed
// as numbers except "any".
func (a Addr) String() string {
	switch a.Network {
	case NetworkVsock:
		cid := strconv.FormatUint(uint64(a.CID), 10)
		if a.CID == CIDAny {
			cid = "any"
		}
		return "vsock://" + cid + ":" + strconv.FormatUint(uint64(a.Port), 10)
	case NetworkTCP:
		return "tcp://" + a.HostPort
	}
	return "invalid://"
}

var cidNames = map[string]uint32{
	"any":    CIDAny,
	"host":   CIDHost,
	"parent": CIDParent,
	"local":  CIDLocal,
}

const forms = `want vsock://CID:PORT (CID a number or any, parent, host, local) or tcp://HOST:PORT`

// ParseAddr parses "vsock://CID:PORT" or "tcp://HOST:PORT". For vsock, CID is
// a decimal number or one of any (VMADDR_CID_ANY), parent (3), host (2) and
// local (1); PORT is a decimal uint32. For TCP, HOST is a name, an IPv4
// address, a bracketed IPv6 address (with a zone if link-local:
// [fe80::1%eth0]) or empty (all interfaces, when listening); PORT is
// 0..65535, 0 meaning "pick a free port" when listening. Control characters
// and invalid UTF-8 are refused anywhere.
func ParseAddr(s string) (Addr, error) {
	bad := func(why string) (Addr, error) {
		return Addr{}, fmt.Errorf("%w %q: %s; %s", ErrBadAddr, s, why, forms)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("missing scheme")
	}
	if strings.ContainsAny(rest, "/?#@ \t\r\n") {
		return bad("unexpected path, query, user or space after the scheme")
	}
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }); i >= 0 {
		return bad(fmt.Sprintf("control character or invalid UTF-8 at byte %d", len(scheme)+3+i))
	}
	switch strings.ToLower(scheme) {
	case NetworkVsock:
		cidStr, portStr, ok := strings.Cut(rest, ":")
		if !ok || cidStr == "" || portStr == "" {
			return bad("vsock needs CID:PORT")
		}
		cid, named := cidNames[strings.ToLower(cidStr)]
		if !named {
			n, err := strconv.ParseUint(cidStr, 10, 32)
			if err != nil {
				return bad(fmt.Sprintf("CID %q is not a uint32 or a known name", cidStr))
			}
			cid = uint32(n)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil {
			return bad(fmt.Sprintf("port %q is not a uint32", portStr))
		}
		return Addr{Network: NetworkVsock, CID: cid, Port: uint32(port)}, nil
	case NetworkTCP:
		host, portStr, err := net.SplitHostPort(rest)
		if err != nil {
			return bad("tcp needs HOST:PORT (IPv6 in brackets)")
		}
		if portStr == "" {
			return bad("missing port")
		}
		if _, err := strconv.ParseUint(portStr, 10, 16); err != nil {
			return bad(fmt.Sprintf("port %q is not a number in 0..65535", portStr))
		}
		if strings.HasPrefix(rest, "[") || strings.Contains(host, ":") {
			// Brackets hold an IPv6 address, with a zone for a link-local
			// one (fe80::1%eth0), and nothing else.
			ip, err := netip.ParseAddr(host)
			if err != nil || !ip.Is6() {
				return bad(fmt.Sprintf("host %q is not a valid IPv6 address (only IPv6 goes in brackets)", host))
			}
		} else if strings.Contains(host, "%") {
			return bad(fmt.Sprintf("host %q: a zone (%%) is only valid on a bracketed IPv6 address", host))
		}
		return Addr{Network: NetworkTCP, HostPort: net.JoinHostPort(host, portStr)}, nil
	}
	return bad(fmt.Sprintf("unknown scheme %q", scheme))
}
