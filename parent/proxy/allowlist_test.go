package proxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
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
		{"64:ff9b::a9fe:a9fe", true},       // NAT64 of 169.254.169.254
		{"64:ff9b:1:a9fe:a9:fe00::", true}, // local-use NAT64 (/48 form) of 169.254.169.254
		{"64:ff9b:1::5db8:d822", true},     // local-use NAT64, whatever it embeds
		{"2002:a9fe:a9fe::1", true},        // 6to4 of 169.254.169.254
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
	} {
		host, port, err := SplitHostPort(tt.in)
		if (err == nil) != tt.ok || host != tt.host || port != tt.port {
			t.Errorf("SplitHostPort(%q) = %q %d %v", tt.in, host, port, err)
		}
	}
}
