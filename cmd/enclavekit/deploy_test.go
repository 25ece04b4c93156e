package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/parent/proxy"
)

// The files operators deploy live in deploy/; docs/deploy.md quotes them.
const deployDir = "../../deploy/"

// TestDeployFilesQuotedInDocs: every unit and config template appears in
// docs/deploy.md exactly as in the file, so the docs and the files cannot
// drift.
func TestDeployFilesQuotedInDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(deployDir + "systemd/*.service")
	configs, _ := filepath.Glob(deployDir + "config/*.yaml")
	if len(files) < 4 || len(configs) < 2 {
		t.Fatalf("deploy/ has %d units and %d configs", len(files), len(configs))
	}
	for _, f := range append(files, configs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), "```"+fenceLang(f)+"\n"+string(b)+"```") {
			t.Errorf("docs/deploy.md does not quote %s as it is", f)
		}
	}
}

func fenceLang(path string) string {
	if strings.HasSuffix(path, ".yaml") {
		return "yaml"
	}
	return "ini"
}

// TestDeployConfigsLoad: the config templates load with the proxy's own
// loaders.
func TestDeployConfigsLoad(t *testing.T) {
	if _, err := proxy.LoadConfig(deployDir + "config/proxy.yaml"); err != nil {
		t.Errorf("proxy.yaml: %v", err)
	}
	if _, err := proxy.LoadConfig(deployDir + "config/vsock-proxy-allowlist.yaml"); err != nil && !strings.Contains(err.Error(), "route") {
		t.Errorf("vsock-proxy-allowlist.yaml: %v", err)
	}
	code, _, stderr := runCLI(t, "vsock-proxy", "--config", deployDir+"config/vsock-proxy-allowlist.yaml", "-h")
	if code != exitOK {
		t.Errorf("vsock-proxy --config vsock-proxy-allowlist.yaml: exit %d: %s", code, stderr)
	}
}

var execStart = regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/enclavekit (.*)$`)

// TestDeployUnitsUseRealFlags: each unit's enclavekit command line names
// a real command and only flags it defines (the command is run with -h
// after them: an unknown flag fails before -h is reached).
func TestDeployUnitsUseRealFlags(t *testing.T) {
	files, _ := filepath.Glob(deployDir + "systemd/*.service")
	n := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, m := range execStart.FindAllStringSubmatch(string(b), -1) {
			n++
			args := strings.Fields(m[1])
			for i, a := range args {
				if strings.HasPrefix(a, "/etc/enclavekit/") {
					args[i] = deployDir + "config/" + filepath.Base(a)
				}
			}
			code, _, stderr := runCLI(t, append(args, "-h")...)
			if code != exitOK {
				t.Errorf("%s: enclavekit %s: exit %d: %s", f, m[1], code, stderr)
			}
		}
	}
	if n < 3 {
		t.Fatalf("found %d enclavekit command lines in the units", n)
	}
}

// TestHelpEveryCommand: "enclavekit help CMD" prints CMD's usage for every
// command, and --version prints the version.
func TestHelpEveryCommand(t *testing.T) {
	for name := range commands {
		code, stdout, stderr := runCLI(t, "help", name)
		if code != exitOK || !strings.Contains(strings.ToLower(stdout+stderr), "usage") {
			t.Errorf("help %s: exit %d, output %q", name, code, stdout+stderr)
		}
	}
	if code, _, stderr := runCLI(t, "help", "nope"); code != exitUsage || !strings.Contains(stderr, `unknown command "nope"`) {
		t.Errorf("help nope: exit %d, %q", code, stderr)
	}
	if code, stdout, _ := runCLI(t, "--version"); code != exitOK || !strings.HasPrefix(stdout, "enclavekit ") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

// TestUsageErrorsSayWhatIsWrong: each bad invocation prints one line that
// names the problem before the usage text, and exits 2.
func TestUsageErrorsSayWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"health"}, "enclavekit health: --addr is required"},
		{[]string{"health", "--addr", "tcp://127.0.0.1:1", "--timeout", "5"}, `invalid value "5" for flag -timeout: want a duration such as 10s`},
		{[]string{"health", "--addr", "tcp://127.0.0.1:1", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"ingress"}, "enclavekit ingress: --to is required"},
		{[]string{"proxy"}, "enclavekit proxy: --config is required"},
		{[]string{"proxy", "--config", "x.yaml", "8000"}, "use enclavekit vsock-proxy"},
		{[]string{"logs", "--level", "verbose"}, `--level "verbose": want debug, info, warn or error`},
		{[]string{"call", "--addr", "tcp://127.0.0.1:1"}, "want METHOD"},
		{[]string{"run"}, "enclavekit run: --config is required"},
		{[]string{"eif", "build", "--memory", "lots"}, `for flag -memory: want a whole number`},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != exitUsage || !strings.Contains(first, tc.want) || !strings.Contains(stderr, "usage") || stdout != "" {
			t.Errorf("%v: exit %d, first line %q, want %q then the usage", tc.args, code, first, tc.want)
		}
	}
}

// TestDaemonLogFormatAndMetrics: the ingress logs JSON lines with
// --log-format json and serves its counters with --metrics.
func TestDaemonLogFormatAndMetrics(t *testing.T) {
	if code, _, stderr := runCLI(t, "ingress", "--listen", "tcp://127.0.0.1:0", "--to", "tcp://127.0.0.1:1", "--log-format", "xml"); code != exitUsage || !strings.Contains(stderr, `--log-format "xml": want text or json`) {
		t.Fatalf("bad --log-format: exit %d, %q", code, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"ingress", "--listen", "tcp://127.0.0.1:0", "--to", "tcp://127.0.0.1:1",
			"--metrics", "tcp://127.0.0.1:0", "--log-format", "json"}, io.Discard, &stderr)
	}()
	defer func() { cancel(); <-done }()
	var metricsURL string
	for deadline := time.Now().Add(20 * time.Second); metricsURL == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "enclavekit ingress: metrics" {
				metricsURL = "http://" + strings.TrimPrefix(rec.Addr, "tcp://")
			}
		}
	}
	if metricsURL == "" {
		t.Fatalf("no JSON log line with the metrics address:\n%s", stderr.String())
	}
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "enclavekit_ingress_connections_total 0") {
		t.Fatalf("metrics:\n%s", body)
	}
}

// TestNoGoNamesInErrors: configuration and flag errors name the flag or
// the YAML field, never a Go type or field.
func TestNoGoNamesInErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	bin := write("bin", "\x7fELF")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ingress", "--listen", "tcp://127.0.0.1:0", "--to", "http://x"}, `--to: transport: bad address "http://x"`},
		{[]string{"eif", "ramdisk", "app", "--binary", bin, "--env", "BAD", "-o", filepath.Join(dir, "x")}, `--env "BAD" is not NAME=value`},
		{[]string{"proxy", "--config", write("w.yaml", "whitelist: []\n")}, `unknown field "whitelist": this file's allowlist key is allowlist`},
		{[]string{"proxy", "--config", write("d.yaml", "routes:\n  - {listen: tcp://127.0.0.1:0, connect: true}\nlimits:\n  dial_timeout: 10\n")}, `d.yaml:4: value "10" is not valid here: write a duration such as 5s`},
	} {
		_, _, stderr := runCLI(t, tc.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.Contains(first, tc.want) || regexp.MustCompile(`[A-Z][a-zA-Z]*Config\.|App\.|time\.Duration|!!int`).MatchString(first) {
			t.Errorf("%v: %q, want %q and no Go names", tc.args, first, tc.want)
		}
	}
}
