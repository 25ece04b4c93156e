package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Resolver resolves names to IP addresses; *net.Resolver implements it.
// Tests inject a fake one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Refusal reasons, used in errors, logs and the "reason" metric label.
const (
	ReasonNotAllowlisted = "not_allowlisted" // host:port not on the allowlist
	ReasonDeniedIP       = "denied_ip"       // resolves to a denylisted IP not itself allowlisted
	ReasonResolve        = "resolve_failed"  // the name did not resolve
	ReasonNoAddress      = "no_address"      // no address of the configured family
	ReasonMaxConns       = "max_conns"       // connection cap reached
	ReasonBadRequest     = "bad_request"     // malformed CONNECT request
	ReasonMethod         = "method"          // not a CONNECT request
	ReasonHeaderTooLarge = "header_too_large"
	ReasonTimeout        = "handshake_timeout"
)

// ErrRefused is wrapped by every *RefusedError.
var ErrRefused = errors.New("proxy: destination refused")

// RefusedError says why a destination was refused.
type RefusedError struct {
	Host   string
	Port   int
	Reason string // one of the Reason* constants
	Detail string // e.g. "resolves to 169.254.169.254 (link-local)"
}

func (e *RefusedError) Error() string {
	s := "proxy: " + e.Host + ":" + strconv.Itoa(e.Port) + " refused: " + e.Reason
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Unwrap() error { return ErrRefused }

type hostPort struct {
	host string
	port int
}

// Allowlist is an immutable set of allowed destinations. The zero value
// allows nothing.
type Allowlist struct {
	names map[hostPort]struct{}
	ips   map[netip.AddrPort]struct{}
}

// NewAllowlist builds an Allowlist; a bad entry is a *FieldError naming
// "allowlist[i]".
func NewAllowlist(entries []AllowEntry) (*Allowlist, error) {
	a := &Allowlist{names: map[hostPort]struct{}{}, ips: map[netip.AddrPort]struct{}{}}
	for i, e := range entries {
		p := fmt.Sprintf("allowlist[%d]", i)
		if e.Address == "" {
			return nil, fieldErr(p+".address", "missing")
		}
		host, err := normalizeHost(e.Address)
		if err != nil {
			return nil, fieldErr(p+".address", "%v", err)
		}
		if e.Port < 1 || e.Port > 65535 {
			return nil, fieldErr(p+".port", "%d is not in 1..65535", e.Port)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if why, bad := Wildcard(ip); bad {
				return nil, fieldErr(p+".address", "%s is %s, which reaches this host's own services, not a destination; list the real destination's address or DNS name", e.Address, why)
			}
			a.ips[netip.AddrPortFrom(ip, uint16(e.Port))] = struct{}{}
		} else {
			a.names[hostPort{host, e.Port}] = struct{}{}
		}
	}
	return a, nil
}

// Len returns the number of distinct entries.
func (a *Allowlist) Len() int { return len(a.names) + len(a.ips) }

// Permits reports whether host (as normalized by SplitHostPort) and port
// are on the list, by name or by IP. It does not resolve names; Check does.
func (a *Allowlist) Permits(host string, port int) bool {
	if port < 1 || port > 65535 {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		_, ok := a.ips[netip.AddrPortFrom(ip.Unmap(), uint16(port))]
		return ok
	}
	_, ok := a.names[hostPort{host, port}]
	return ok
}

// Check decides whether the proxy may connect to host:port and returns the
// IP addresses to dial. host must be normalized (see SplitHostPort);
// network is "tcp", "tcp4" or "tcp6". The destination must be on the
// list; a name is then resolved with r, and every resolved address must
// pass the denylist (see Denied) unless that exact IP and port are
// themselves allowlisted. One denied address refuses the whole name, so a
// DNS answer mixing a public address with 169.254.169.254 is refused. The
// returned addresses are what the caller must dial, so nothing is
// resolved twice (no rebinding window). Errors are *RefusedError.
func (a *Allowlist) Check(ctx context.Context, r Resolver, network, host string, port int) ([]netip.Addr, error) {
	refuse := func(reason, detail string) ([]netip.Addr, error) {
		return nil, &RefusedError{Host: host, Port: port, Reason: reason, Detail: detail}
	}
	if !a.Permits(host, port) {
		return refuse(ReasonNotAllowlisted, "")
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip.Unmap()}
	} else {
		fam := "ip"
		switch network {
		case "tcp4":
			fam = "ip4"
		case "tcp6":
			fam = "ip6"
		}
		got, err := r.LookupNetIP(ctx, fam, host)
		if err != nil {
			return refuse(ReasonResolve, err.Error())
		}
		ips = make([]netip.Addr, 0, len(got))
		for _, ip := range got {
			ips = append(ips, ip.Unmap())
		}
	}
	out := ips[:0]
	for _, ip := range ips {
		if why, bad := Denied(ip); bad {
			if _, ok := a.ips[netip.AddrPortFrom(ip.WithZone(""), uint16(port))]; !ok {
				return refuse(ReasonDeniedIP, fmt.Sprintf("resolves to %s (%s)", ip, why))
			}
		}
		if (network == "tcp4" && !ip.Is4()) || (network == "tcp6" && !ip.Is6()) {
			continue
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		return refuse(ReasonNoAddress, "no usable address for network "+network)
	}
	return out, nil
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	sharedCGNAT = netip.MustParsePrefix("100.64.0.0/10")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	teredo      = netip.MustParsePrefix("2001::/32")
	v4Compat    = netip.MustParsePrefix("::/96")
	siit        = netip.MustParsePrefix("::ffff:0:0:0/96")
	siteLocal   = netip.MustParsePrefix("fec0::/10")
	reserved4   = netip.MustParsePrefix("240.0.0.0/4")
)

// Denied reports whether ip is in a range the proxy never dials unless
// the exact IP is allowlisted, and which: loopback (127/8, ::1), link-local
// (169.254/16 — including IMDS 169.254.169.254 — and fe80::/10),
// unspecified, multicast, private (RFC 1918 10/8, 172.16/12, 192.168/16,
// ULA fc00::/7 — including IMDS's fd00:ec2::254), 0.0.0.0/8, shared address
// space 100.64/10, reserved 240/4 (broadcast included), deprecated IPv6
// site-local fec0::/10, IPv6 addresses embedding a denied IPv4 address
// (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32 —
// server or client), and all of the IPv4-compatible ::/96, SIIT
// ::ffff:0:0:0/96 and local-use NAT64 64:ff9b:1::/48 prefixes.
func Denied(ip netip.Addr) (string, bool) {
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return "invalid", true
	case ip.IsUnspecified():
		return "unspecified", true
	case ip.IsLoopback():
		return "loopback", true
	case ip.IsLinkLocalUnicast():
		return "link-local", true
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast", true
	case ip.IsPrivate():
		return "private", true
	case thisNetwork.Contains(ip):
		return "this-network", true
	case sharedCGNAT.Contains(ip):
		return "shared-address-space", true
	case reserved4.Contains(ip):
		return "reserved", true
	case siteLocal.Contains(ip):
		return "site-local", true
	case v4Compat.Contains(ip), siit.Contains(ip):
		// Deprecated IPv4-compatible (::a.b.c.d, RFC 4291) and SIIT
		// IPv4-translated (::ffff:0:a.b.c.d, RFC 2765) forms: a kernel
		// may still tunnel or translate them to the embedded IPv4
		// address, and no public destination uses them.
		return "IPv4-compatible", true
	case nat64Local.Contains(ip):
		// RFC 8215 local-use NAT64: the IPv4 address may sit at any of
		// RFC 6052's positions, so the whole prefix is refused.
		return "local-use NAT64", true
	}
	if ip.Is6() {
		b := ip.As16()
		var v4 netip.Addr
		switch {
		case nat64.Contains(ip):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFour.Contains(ip):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		case teredo.Contains(ip):
			// RFC 4380: the Teredo server's IPv4 address in clear, the
			// client's (the one packets go to) with every bit inverted.
			server := netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})
			if why, bad := Denied(server); bad {
				return "embeds " + server.String() + " (" + why + ")", true
			}
			v4 = netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		}
		if v4.IsValid() {
			if why, bad := Denied(v4); bad {
				return "embeds " + v4.String() + " (" + why + ")", true
			}
		}
	}
	return "", false
}

// Wildcard reports whether ip is an unspecified ("any") address in one of
// its spellings, and which: 0.0.0.0 and the rest of 0.0.0.0/8, ::, and
// IPv6 forms that embed 0.0.0.0 (IPv4-mapped ::ffff:0.0.0.0, SIIT
// ::ffff:0:0.0.0.0, NAT64 64:ff9b::, 6to4 2002::). A kernel connects such
// a destination to the local host, so an allowlist entry naming one would
// let the enclave reach the parent's loopback services despite the
// denylist; NewAllowlist refuses them.
func Wildcard(ip netip.Addr) (string, bool) {
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return "", false
	case ip.IsUnspecified():
		return "the unspecified (any) address", true
	case thisNetwork.Contains(ip):
		return "in 0.0.0.0/8 (this network)", true
	case ip.Is6():
		b := ip.As16()
		var v4 netip.Addr
		switch {
		case siit.Contains(ip):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case nat64.Contains(ip):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFour.Contains(ip):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if v4.IsValid() && thisNetwork.Contains(v4) {
			return "an IPv6 form of " + v4.String() + " (unspecified)", true
		}
	}
	return "", false
}
