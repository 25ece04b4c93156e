package proxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestDenied(t *testing.T) {
	tests := []struct {
		ip     string
		denied bool
	}{
		{"169.254.169.254", true}, // IMDS
		{"169.254.169.253", true}, // Amazon DNS
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"::1", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"::", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"ff02::1", true},
		{"fe80::1", true},
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"192.168.1.1", true},
		{"fd00:ec2::254", true}, // IMDS over IPv6
		{"100.64.0.1", true},
		{"255.255.255.255", true},
		{"::ffff:169.254.169.254", true},
		{"64:ff9b::a9fe:a9fe", true},                    // NAT64 of 169.254.169.254
		{"64:ff9b:1:a9fe:a9:fe00::", true},              // local-use NAT64 (/48 form) of 169.254.169.254
		{"64:ff9b:1::5db8:d822", true},                  // local-use NAT64, whatever it embeds
		{"2002:a9fe:a9fe::1", true},                     // 6to4 of 169.254.169.254
		{"::a9fe:a9fe", true},                           // IPv4-compatible 169.254.169.254
		{"::7f00:1", true},                              // IPv4-compatible 127.0.0.1
		{"::5db8:d822", true},                           // IPv4-compatible, whatever it embeds
		{"::ffff:0:a9fe:a9fe", true},                    // SIIT IPv4-translated 169.254.169.254
		{"2001:0:a9fe:a9fe:8000:63bf:3fff:fdd2", true},  // Teredo, server 169.254.169.254
		{"2001:0:4136:e378:8000:63bf:5601:5601", true},  // Teredo, client ^169.254.169.254
		{"fec0::1", true},                               // deprecated site-local
		{"240.0.0.1", true},                             // reserved
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, // Teredo between public addresses
		{"93.184.216.34", false},
		{"52.94.133.131", false},
		{"172.32.0.1", false},
		{"2600:1f18::1", false},
		{"64:ff9b::5db8:d822", false}, // NAT64 of a public address
	}
	for _, tt := range tests {
		why, denied := Denied(netip.MustParseAddr(tt.ip))
		if denied != tt.denied {
			t.Errorf("Denied(%s) = %v (%s), want %v", tt.ip, denied, why, tt.denied)
		}
	}
}

func TestAllowlistCheck(t *testing.T) {
	al, err := NewAllowlist([]AllowEntry{
		{Address: "kms.eu-west-1.amazonaws.com", Port: 443},
		{Address: "Rebind.Example.", Port: 443},
		{Address: "mixed.example", Port: 443},
		{Address: "internal.example", Port: 8443},
		{Address: "10.0.0.5", Port: 8443},
		{Address: "93.184.216.34", Port: 443},
		{Address: "169.254.169.254", Port: 80},
		{Address: "dual.example", Port: 443},
		{Address: "gone.example", Port: 443},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := fakeResolver{
		"kms.eu-west-1.amazonaws.com": {netip.MustParseAddr("52.94.133.131")},
		"rebind.example":              {netip.MustParseAddr("169.254.169.254")},
		"mixed.example":               {netip.MustParseAddr("52.94.133.131"), netip.MustParseAddr("127.0.0.1")},
		"internal.example":            {netip.MustParseAddr("10.0.0.5")},
		"dual.example":                {netip.MustParseAddr("2600:1f18::1"), netip.MustParseAddr("52.94.133.132")},
		"evil.example":                {netip.MustParseAddr("52.94.133.131")},
	}
	tests := []struct {
		name, network, host string
		port                int
		want                []string
		reason              string
	}{
		{"name", "tcp", "kms.eu-west-1.amazonaws.com", 443, []string{"52.94.133.131"}, ""},
		{"name, wrong port", "tcp", "kms.eu-west-1.amazonaws.com", 80, nil, ReasonNotAllowlisted},
		{"name not listed", "tcp", "evil.example", 443, nil, ReasonNotAllowlisted},
		{"listed IP", "tcp", "93.184.216.34", 443, []string{"93.184.216.34"}, ""},
		{"listed IP, wrong port", "tcp", "93.184.216.34", 80, nil, ReasonNotAllowlisted},
		{"IMDS by IP, not listed at that port", "tcp", "169.254.169.254", 443, nil, ReasonNotAllowlisted},
		{"IMDS by IP, listed exactly", "tcp", "169.254.169.254", 80, []string{"169.254.169.254"}, ""},
		{"loopback not listed", "tcp", "127.0.0.1", 443, nil, ReasonNotAllowlisted},
		{"rebinding to IMDS", "tcp", "rebind.example", 443, nil, ReasonDeniedIP},
		{"one answer of two is loopback", "tcp", "mixed.example", 443, nil, ReasonDeniedIP},
		{"private IP allowlisted exactly", "tcp", "internal.example", 8443, []string{"10.0.0.5"}, ""},
		{"resolve failure", "tcp", "gone.example", 443, nil, ReasonResolve},
		{"dual stack", "tcp", "dual.example", 443, []string{"2600:1f18::1", "52.94.133.132"}, ""},
		{"dual stack, tcp4", "tcp4", "dual.example", 443, []string{"52.94.133.132"}, ""},
		{"IPv4 literal, tcp6", "tcp6", "93.184.216.34", 443, nil, ReasonNoAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ips, err := al.Check(context.Background(), res, tt.network, tt.host, tt.port)
			if tt.reason != "" {
				var re *RefusedError
				if !errors.As(err, &re) || re.Reason != tt.reason || !errors.Is(err, ErrRefused) {
					t.Fatalf("got %v, %v; want refusal %s", ips, err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tt := range []struct {
		in, host string
		port     int
		ok       bool
	}{
		{"KMS.eu-west-1.amazonaws.com.:443", "kms.eu-west-1.amazonaws.com", 443, true},
		{"[::ffff:1.2.3.4]:1", "1.2.3.4", 1, true},
		{"[2001:DB8::1]:65535", "2001:db8::1", 65535, true},
		{"a.example:0", "", 0, false},
		{"a.example:", "", 0, false},
		{"a.example", "", 0, false},
		{":443", "", 0, false},
		{"a..b:1", "", 0, false},
		{"-a.b:1", "", 0, false},
		{"a b:1", "", 0, false},
		// Numeric forms an inet_aton-style resolver reads as 127.0.0.1.
		{"2130706433:80", "", 0, false},
		{"127.1:80", "", 0, false},
		{"0x7f.1:80", "", 0, false},
		{"0x7f000001:80", "", 0, false},
		{"0177.0.0.1:80", "", 0, false},
		{"127.0.0.1.example:80", "127.0.0.1.example", 80, true},
		{"0xabc.example:80", "0xabc.example", 80, true},
		// A trailing dot does not turn an IP address into a name.
		{"169.254.169.254.:80", "169.254.169.254", 80, true},
		// U+212A KELVIN SIGN lower-cases to ASCII 'k'.
		{"\u212Ams.example:443", "", 0, false},
		{"[fe80::1%25eth0]:443", "", 0, false},
		{"a.example:443 ", "", 0, false},
		{"a.example: 443", "", 0, false},
		{"a.example:0443", "a.example", 443, true},
	} {
		host, port, err := SplitHostPort(tt.in)
		if (err == nil) != tt.ok || host != tt.host || port != tt.port {
			t.Errorf("SplitHostPort(%q) = %q %d %v", tt.in, host, port, err)
		}
	}
}

// TestAllowlistEntryForms: an allowlist entry means what the same text
// means as a CONNECT target, and numeric "names" are refused.
func TestAllowlistEntryForms(t *testing.T) {
	for _, addr := range []string{"2130706433", "127.1", "0x7f.1", "0177.0.0.1", "\u212Ams.example"} {
		if _, err := NewAllowlist([]AllowEntry{{Address: addr, Port: 443}}); err == nil {
			t.Errorf("NewAllowlist accepted address %q", addr)
		}
	}
	al, err := NewAllowlist([]AllowEntry{{Address: "10.0.0.5.", Port: 443}})
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := SplitHostPort("10.0.0.5.:443")
	if err != nil {
		t.Fatal(err)
	}
	ips, err := al.Check(context.Background(), fakeResolver{}, "tcp", host, port)
	if err != nil || len(ips) != 1 || ips[0] != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("Check(%s) = %v, %v; want [10.0.0.5]", host, ips, err)
	}
}

func TestWildcard(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"0.0.0.0", true},
		{"::", true},
		{"::ffff:0.0.0.0", true},
		{"0:0:0:0:0:0:0:0", true},
		{"0.255.1.1", true},
		{"::ffff:0:0.0.0.0", true}, // SIIT
		{"64:ff9b::", true},        // NAT64 of 0.0.0.0
		{"2002::", true},           // 6to4 of 0.0.0.0
		{"::1", false},
		{"127.0.0.1", false},
		{"10.0.0.5", false},
		{"1.0.0.0", false},
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			why, got := Wildcard(netip.MustParseAddr(tt.addr))
			if got != tt.want {
				t.Errorf("Wildcard(%s) = %q, %v; want %v", tt.addr, why, got, tt.want)
			}
			_, err := NewAllowlist([]AllowEntry{{Address: tt.addr, Port: 443}})
			if (err != nil) != tt.want {
				t.Errorf("NewAllowlist(%s) error = %v; want refused %v", tt.addr, err, tt.want)
			}
			if err != nil && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "allowlist[0].address: "+tt.addr)) {
				t.Errorf("error %q does not name the field and value", err)
			}
		})
	}
}
