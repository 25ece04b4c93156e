package proxy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// awsFile is the shape of AWS vsock-proxy's /etc/nitro_enclaves/vsock-proxy.yaml.
const awsFile = `allowlist:
- {address: kms.us-east-1.amazonaws.com, port: 443}
- {address: kms-fips.us-east-1.amazonaws.com, port: 443}
- {address: kms.eu-west-1.amazonaws.com, port: 443}
`

const fullFile = `routes:
  - listen: vsock://any:8000
    to: kms.eu-west-1.amazonaws.com:443
  - listen: vsock://any:8001
    connect: true
    name: https
allowlist:
  - {address: kms.eu-west-1.amazonaws.com, port: 443}
  - address: 10.0.0.5
    port: 8443
limits: {max_conns: 4096, dial_timeout: 10s, idle_timeout: 5m}
metrics: tcp://127.0.0.1:9100
network: tcp4
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("full.yaml", []byte(fullFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 2 || cfg.Routes[0].To != "kms.eu-west-1.amazonaws.com:443" || !cfg.Routes[1].Connect ||
		cfg.Limits.IdleTimeout != 5*time.Minute || cfg.Limits.DialTimeout != 10*time.Second || cfg.Limits.MaxConns != 4096 ||
		cfg.Metrics != "tcp://127.0.0.1:9100" || len(cfg.Allowlist) != 2 || cfg.Network != "tcp4" {
		t.Errorf("parsed %+v", cfg)
	}
	d := cfg.withDefaults()
	if d.Routes[0].Name != "vsock://any:8000" || d.Routes[1].Name != "https" || d.Limits.DrainTimeout != DefaultDrainTimeout {
		t.Errorf("defaults %+v", d)
	}

	aws, err := ParseConfig("vsock-proxy.yaml", []byte(awsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(aws.Allowlist) != 3 || len(aws.Routes) != 0 {
		t.Errorf("AWS file parsed as %+v", aws)
	}
	if err := aws.Validate(); err == nil {
		t.Error("Validate accepted a config without routes")
	}
	if empty, err := ParseConfig("empty.yaml", nil); err != nil || len(empty.Allowlist) != 0 {
		t.Errorf("empty file: %+v %v", empty, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "allowlist: []\nroutez: []\n", `f.yaml:2: unknown field "routez"`},
		{"vsock-proxy's old key", "whitelist: []\n", `f.yaml:1: unknown field "whitelist": this file's allowlist key is allowlist`},
		{"unknown route key", "routes:\n  - listen: tcp://127.0.0.1:1\n    connect: true\n    tls: true\n", `f.yaml:4: unknown field "tls"`},
		{"unknown allowlist key", "allowlist:\n  - {address: a.example, port: 1, proto: tcp}\n", `f.yaml:2: unknown field "proto"`},
		{"bad listen", "routes:\n  - listen: http://x:1\n    connect: true\n", "f.yaml:2: routes[0].listen: transport: bad address"},
		{"missing listen", "routes:\n  - connect: true\n", "f.yaml:2: routes[0].listen: missing"},
		{"to not allowlisted", "allowlist:\n  - {address: a.example, port: 443}\nroutes:\n  - listen: tcp://127.0.0.1:1\n    to: b.example:443\n", "f.yaml:5: routes[0].to: b.example:443 is not on the allowlist"},
		{"to wrong port", "allowlist:\n  - {address: a.example, port: 443}\nroutes:\n  - listen: tcp://127.0.0.1:1\n    to: a.example:444\n", "f.yaml:5: routes[0].to"},
		{"to and connect", "allowlist:\n  - {address: a.example, port: 443}\nroutes:\n  - listen: tcp://127.0.0.1:1\n    to: a.example:443\n    connect: true\n", "f.yaml:4: routes[0]: set either"},
		{"neither to nor connect", "routes:\n  - listen: tcp://127.0.0.1:1\n", "f.yaml:2: routes[0]: missing to"},
		{"bad to", "routes:\n  - listen: tcp://127.0.0.1:1\n    to: nope\n", "f.yaml:3: routes[0].to"},
		{"duplicate listen", "routes:\n  - listen: tcp://127.0.0.1:1\n    connect: true\n  - listen: tcp://127.0.0.1:1\n    connect: true\n", "f.yaml:4: routes[1].listen: same address"},
		{"bad allowlist port", "allowlist:\n  - {address: a.example, port: 70000}\n", "f.yaml:2: allowlist[0].port"},
		{"allowlist port missing", "allowlist:\n  - {address: a.example}\n", "f.yaml:2: allowlist[0].port"},
		{"allowlist CIDR", "allowlist:\n  - {address: 10.0.0.0/8, port: 443}\n", "CIDR ranges are not supported"},
		{"allowlist 0.0.0.0", "allowlist:\n  - {address: 0.0.0.0, port: 443}\n", "f.yaml:2: allowlist[0].address: 0.0.0.0 is the unspecified (any) address"},
		{"allowlist ::", "allowlist:\n  - {address: '::', port: 443}\n", "f.yaml:2: allowlist[0].address: :: is the unspecified"},
		{"allowlist mapped any", "allowlist:\n  - {address: '::ffff:0.0.0.0', port: 443}\n", "allowlist[0].address: ::ffff:0.0.0.0 is the unspecified"},
		{"allowlist this-network", "allowlist:\n  - {address: 0.1.2.3, port: 443}\n", "allowlist[0].address: 0.1.2.3 is in 0.0.0.0/8"},
		{"allowlist bad name", "allowlist:\n\n  - {address: 'a b', port: 443}\n", "f.yaml:3: allowlist[0].address"},
		{"port as string", "allowlist:\n  - {address: a.example, port: https}\n", `f.yaml:2: value "https" is not valid here: write a whole number`},
		{"bad duration", "limits: {idle_timeout: forever}\n", `f.yaml:1: value "forever" is not valid here: write a duration such as 5s`},
		{"negative max_conns", "limits:\n  max_conns: -1\n", "f.yaml:2: limits.max_conns"},
		{"bad metrics", "metrics: 9100\n", "f.yaml:1: metrics"},
		{"bad network", "network: udp\n", "f.yaml:1: network"},
		{"two documents", "allowlist: []\n---\nallowlist: []\n", "more than one YAML document"},
		{"syntax error", "allowlist: [\n", "f.yaml"},
		{"not a mapping", "- a\n- b\n", "f.yaml:1: a list is not valid here: write a mapping of fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("f.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vsock-proxy.yaml")
	if err := os.WriteFile(p, []byte(awsFile), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil || len(cfg.Allowlist) != 3 {
		t.Fatalf("%+v %v", cfg, err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

// FuzzAllowlistYAML: ParseConfig never panics on arbitrary bytes, and a
// config it accepts builds an allowlist and validates consistently.
func FuzzAllowlistYAML(f *testing.F) {
	f.Add([]byte(awsFile))
	f.Add([]byte(fullFile))
	f.Add([]byte("allowlist:\n  - {address: 169.254.169.254, port: 80}\n"))
	f.Add([]byte("allowlist: [{address: '::1', port: 1}]\nroutes: [{listen: 'tcp://[::1]:0', to: '[::1]:1'}]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		al, err := NewAllowlist(cfg.Allowlist)
		if err != nil {
			t.Fatalf("accepted config has a bad allowlist: %v", err)
		}
		for _, r := range cfg.Routes {
			if r.To != "" {
				h, p, err := SplitHostPort(r.To)
				if err != nil || !al.Permits(h, p) {
					t.Fatalf("accepted route to %q not on the allowlist", r.To)
				}
			}
		}
	})
}
