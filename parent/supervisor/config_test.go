package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const oneEnclave = `enclaves:
  - name: signer
    eif: /opt/signer.eif
    memory_mib: 512
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("run.yaml", []byte(oneEnclave))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Enclaves[0]
	if e.CID != 16 || e.CPUs != 2 || e.Address != "vsock://16:5000" || e.LogSink != "vsock://any:5001" || e.Debug {
		t.Fatalf("defaults: %+v", e)
	}
	if cfg.NitroCLI[0] != "nitro-cli" || cfg.HTTP != DefaultHTTPListen || cfg.Health.Failures != DefaultProbeFailures {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// fourEnclaves lists n enclaves with default CIDs and sinks.
func enclavesYAML(n int, extra string) string {
	var b strings.Builder
	b.WriteString(extra + "enclaves:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: e%d, eif: /e.eif, memory_mib: 256}\n", i)
	}
	return b.String()
}

// TestAssignments: CIDs and parent vsock ports per enclave and slot.
func TestAssignments(t *testing.T) {
	for _, tc := range []struct {
		name     string
		yaml     string
		wantCIDs string
		wantSink string
		wantEgr  string
	}{
		{"four", enclavesYAML(4, ""), "16 17 18 19", "vsock://any:5001 vsock://any:5002 vsock://any:5003 vsock://any:5004", "[]"},
		{"slot 2", enclavesYAML(2, "slot: 2\negress:\n  routes: [{listen: 'vsock://any:8000', to: 'kms.eu-west-1.amazonaws.com:443'}]\n  allowlist: [{address: kms.eu-west-1.amazonaws.com, port: 443}]\n"),
			"24 25", "vsock://any:5201 vsock://any:5202", "[vsock://any:8200]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig("run.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var cids, sinks []string
			for _, a := range cfg.Assignments() {
				cids = append(cids, fmt.Sprint(a.CID))
				sinks = append(sinks, a.LogSink)
			}
			if got := strings.Join(cids, " "); got != tc.wantCIDs {
				t.Errorf("CIDs %s, want %s", got, tc.wantCIDs)
			}
			if got := strings.Join(sinks, " "); got != tc.wantSink {
				t.Errorf("log sinks %s, want %s", got, tc.wantSink)
			}
			if got := fmt.Sprint(cfg.EgressListens()); got != tc.wantEgr {
				t.Errorf("egress %s, want %s", got, tc.wantEgr)
			}
			// New validates again: nothing may move twice.
			before := fmt.Sprint(cfg.Assignments(), cfg.EgressListens())
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if after := fmt.Sprint(cfg.Assignments(), cfg.EgressListens()); after != before {
				t.Errorf("second Validate moved the assignments:\n%s\n%s", before, after)
			}
		})
	}
}

// TestConfigErrors: every error names the file, the line, the field and
// the fix, and never a Go type.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // substring, after "run.yaml:"
	}{
		{"empty", "", "run.yaml: empty configuration"},
		{"not yaml", "enclaves: [\n", "run.yaml:1: did not find expected node content (not valid YAML: check the indentation"},
		{"unknown top-level", "enclave:\n  - name: x\n", `run.yaml:1: unknown field "enclave": fix its spelling or remove it`},
		{"unknown nested", oneEnclave + "    cpu: 2\n", `run.yaml:5: unknown field "cpu"`},
		{"wrong type", "slot: two\n" + oneEnclave, `run.yaml:1: value "two" is not valid here: write a whole number`},
		{"mapping for a list", "enclaves: {name: a}\n", "run.yaml:1: a mapping is not valid here: write a list of enclaves (- name: …)"},
		{"list for a mapping", "egress: [1]\n" + oneEnclave, "run.yaml:1: a list is not valid here: write a mapping of fields (key: value)"},
		{"mapping for routes", "egress: {routes: {a: 1}}\n" + oneEnclave, "run.yaml:1: a mapping is not valid here: write a list (- …)"},
		{"number for health", "health: 5\n" + oneEnclave, `run.yaml:1: value "5" is not valid here: write a mapping of fields (key: value)`},
		{"bad duration", "health: {interval: soon}\n" + oneEnclave, `run.yaml:1: value "soon" is not valid here: write a duration such as 5s or 2m`},
		{"no enclaves", "slot: 1\n", "run.yaml:1: enclaves: no enclaves; list at least one"},
		{"five enclaves", enclavesYAML(5, ""), "run.yaml:1: enclaves: 5 enclaves listed; an instance runs at most 4"},
		{"duplicate CID", "enclaves:\n  - {name: a, eif: /a, memory_mib: 256, cid: 20}\n  - {name: b, eif: /b, memory_mib: 256, cid: 20}\n",
			"run.yaml:3: enclaves[1].cid: CID 20 is also the CID of enclaves[0]; give each enclave its own CID"},
		{"default CID collides", "enclaves:\n  - {name: a, eif: /a, memory_mib: 256, cid: 17}\n  - {name: b, eif: /b, memory_mib: 256}\n",
			"run.yaml:3: enclaves[1].cid: CID 17 is also the CID of enclaves[0]"},
		{"reserved CID", "enclaves:\n  - {name: a, eif: /a, memory_mib: 256, cid: 3}\n", "enclaves[0].cid: 3 is reserved"},
		{"duplicate sink port", "enclaves:\n  - {name: a, eif: /a, memory_mib: 256}\n  - {name: b, eif: /b, memory_mib: 256, log_sink: 'vsock://any:5001'}\n",
			"run.yaml:3: enclaves[1].log_sink: parent vsock port 5001 is also used by enclaves[0].log_sink"},
		{"sink collides with egress", "egress:\n  routes: [{listen: 'vsock://any:5001', to: 'kms.eu-west-1.amazonaws.com:443'}]\n  allowlist: [{address: kms.eu-west-1.amazonaws.com, port: 443}]\n" + oneEnclave,
			"enclaves[0].log_sink: parent vsock port 5001 is also used by egress.routes[0].listen"},
		{"egress not allowlisted", "egress:\n  routes: [{listen: 'vsock://any:8000', to: 'example.com:443'}]\n" + oneEnclave,
			"run.yaml:2: egress.routes[0].to: example.com:443 is not on the allowlist; add {address: example.com, port: 443}"},
		{"small memory", "enclaves:\n  - name: a\n    eif: /a\n    memory_mib: 10\n", "run.yaml:4: enclaves[0].memory_mib: 10 is too small; write at least 64"},
		{"bad name", "enclaves:\n  - {name: 'My Enclave', eif: /a, memory_mib: 256}\n", `enclaves[0].name: "My Enclave" is not a usable name`},
		{"duplicate name", "enclaves:\n  - {name: a, eif: /a, memory_mib: 256}\n  - {name: a, eif: /b, memory_mib: 256}\n", "enclaves[1].name: \"a\" is also the name of enclaves[0]"},
		{"no eif", "enclaves:\n  - {name: a, memory_mib: 256}\n", "enclaves[0].eif: missing; write the path"},
		{"slot range", "slot: 16\n" + oneEnclave, "run.yaml:1: slot: 16 is out of range; write a number in 0..15"},
		{"ingress without port", oneEnclave + "    ingress:\n      - listen: tcp://0.0.0.0:443\n", "run.yaml:6: enclaves[0].ingress[0].port: missing"},
		{"backoff order", "restart: {min_backoff: 10s, max_backoff: 1s}\n" + oneEnclave, "restart.max_backoff: 1s is less than min_backoff 10s; raise it"},
		{"two documents", oneEnclave + "---\nslot: 1\n", "more than one YAML document"},
		{"run logs not a directory", "run_logs: /nonexistent/runs\n" + oneEnclave, `run.yaml:1: run_logs: "/nonexistent/runs" is not a directory; create it`},
		{"run logs keep", "run_logs_keep: -1\n" + oneEnclave, "run.yaml:1: run_logs_keep: -1 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("run.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not match ErrConfig", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error\n  %s\nwant it to contain\n  %s", msg, tc.want)
			}
			if strings.Contains(msg, "supervisor.") || strings.Contains(msg, "proxy.") || strings.Contains(msg, "time.Duration") || strings.Contains(msg, "[]") || strings.Contains(msg, "\n") {
				t.Errorf("error is not one line free of Go names: %s", msg)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig("/nonexistent/run.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "/nonexistent/run.yaml: cannot read the configuration") {
		t.Fatalf("err = %v", err)
	}
}

func TestNextBackoff(t *testing.T) {
	for _, tc := range []struct{ in, max, want string }{
		{"1s", "1m", "2s"},
		{"20s", "1m", "40s"},
		{"40s", "1m", "1m0s"},
		{"1m", "1m", "1m0s"},
	} {
		in, max, want := mustDur(t, tc.in), mustDur(t, tc.max), mustDur(t, tc.want)
		if got := nextBackoff(in, max); got != want {
			t.Errorf("nextBackoff(%s, %s) = %s, want %s", tc.in, tc.max, got, want)
		}
	}
}

func mustDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
