package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
)

// docCommand is one command line of a ```sh block in a doc page.
type docCommand struct {
	line    string // continuation lines joined, the comment removed
	comment string // the text after "  # ", if any
	ec2     bool   // from a ```sh ec2 block
	block   int    // which sh block of the page (0, 1, ...)
}

// docCommands returns the commands of the page's sh blocks.
func docCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	return docLines(t, path, "```sh", "```sh ec2")
}

// docLines returns the lines of the page's blocks opened by one of fences
// (continuation lines joined, "   # " comments and comment lines removed).
func docLines(t *testing.T, path string, fences ...string) []docCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docCommand
	in, ec2 := false, false
	block := -1
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !in && slices.Contains(fences, l):
			in, ec2 = true, l == "```sh ec2"
			block++
			continue
		case in && l == "```":
			in = false
			continue
		case !in:
			continue
		}
		cur += strings.TrimSpace(l)
		if strings.HasSuffix(cur, "\\") {
			cur = strings.TrimSuffix(cur, "\\") + " "
			continue
		}
		c := docCommand{line: cur, ec2: ec2, block: block}
		if i := strings.Index(cur, "   # "); i >= 0 {
			c.line, c.comment = strings.TrimSpace(cur[:i]), strings.TrimSpace(cur[i+5:])
		}
		cur = ""
		if c.line != "" && !strings.HasPrefix(c.line, "#") {
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	docAddr       = regexp.MustCompile(`tcp://(127\.0\.0\.1|0\.0\.0\.0|203\.0\.113\.10):\d+|vsock://16:\d+`)
	ingressListen = regexp.MustCompile(`listen=(tcp://\S+)`)
)

// TestAttestedTLSDocCommands runs the commands of docs/attested-tls.md:
// the local ones as shown (on loopback ports chosen free), the EC2 ones as
// far as they can run here (see the page's last paragraph of "On EC2").
func TestAttestedTLSDocCommands(t *testing.T) {
	cmds := docCommands(t, "../../docs/attested-tls.md")
	if len(cmds) < 8 {
		t.Fatalf("found only %d commands in the page", len(cmds))
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() {
		cancel()
		bg.Wait()
	}()

	// Documented address -> the address it runs on here.
	addrs := map[string]string{}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := "tcp://" + closed.Addr().String()
	closed.Close()
	env := map[string]string{}
	checkedSample := false
	paths := strings.NewReplacer("/tmp/enclavekit-emulator-root.pem", filepath.Join(tmp, "root.pem"),
		"enclave.eif", "../../build/eif/testdata/golden_v4.eif")

	fields := func(c docCommand) []string {
		line := paths.Replace(c.line)
		for k, v := range env {
			line = strings.ReplaceAll(line, "$"+k, v)
		}
		line = docAddr.ReplaceAllStringFunc(line, func(a string) string {
			if r, ok := addrs[a]; ok {
				return r
			}
			return a
		})
		return strings.Fields(line)
	}

	for _, c := range cmds {
		t.Logf("doc command: %s", c.line)
		f := fields(c)
		switch {
		case strings.HasPrefix(c.line, "go run ./cmd/enclaved "):
			args := f[3:]
			var docListen, docTLS string
			for i, a := range args {
				if strings.HasPrefix(a, "tcp://") {
					switch args[i-1] {
					case "--listen":
						docListen = a
					case "--tls-listen":
						docTLS = a
					}
					args[i] = "tcp://127.0.0.1:0"
				}
			}
			addrs[docListen], addrs[docTLS], _ = startEnclaved(t, ctx, &bg, args, 20*time.Second)

		case strings.HasPrefix(c.line, "go run ./cmd/enclavekit ingress "):
			args := f[3:]
			var docListen string
			for i, a := range args {
				if a == "--listen" {
					docListen = args[i+1]
					args[i+1] = "tcp://127.0.0.1:0" // never 0.0.0.0 in a test
				}
			}
			var stderr syncbuf.Buffer
			done := make(chan int, 1)
			ictx, icancel := context.WithCancel(ctx)
			bg.Go(func() { done <- run(ictx, args, &bytes.Buffer{}, &stderr) })
			deadline := time.Now().Add(20 * time.Second)
			for ingressListen.FindStringSubmatch(stderr.String()) == nil && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			m := ingressListen.FindStringSubmatch(stderr.String())
			if m == nil {
				icancel()
				t.Fatalf("%s: not listening:\n%s", c.line, stderr.String())
			}
			if c.ec2 {
				// Started and stopped: the flags are right.
				icancel()
				if code := <-done; code != exitOK {
					t.Fatalf("%s: exit %d:\n%s", c.line, code, stderr.String())
				}
				continue
			}
			addrs[docListen] = m[1]
			bg.Go(func() { <-ctx.Done(); icancel() })

		case strings.HasPrefix(c.line, "go run ./cmd/enclavekit attest tls "):
			args := f[3:]
			want, wantErr := exitOK, ""
			if c.ec2 {
				// The enclave over vsock and the instance from outside
				// exist only on EC2: here they must fail only to connect.
				for i, a := range args {
					if docAddr.MatchString(a) {
						args[i] = closedAddr
					}
				}
				want, wantErr = exitFailure, "FAILED connect"
			}
			if strings.HasPrefix(c.comment, "exit 1: ") {
				want, wantErr = exitFailure, strings.TrimPrefix(c.comment, "exit 1: ")
			}
			var stdout, stderr bytes.Buffer
			code := run(ctx, args, &stdout, &stderr)
			if code != want || !strings.Contains(stderr.String(), wantErr) {
				t.Fatalf("%s: exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", c.line, code, want, wantErr, stdout.String(), stderr.String())
			}
			if code == exitOK && !strings.Contains(stdout.String(), `"verified": true`) {
				t.Fatalf("%s: no verified report:\n%s", c.line, stdout.String())
			}
			if code == exitOK && !checkedSample {
				// The page's sample report is the first one's.
				checkedSample = true
				var got, want struct{ Checks []string }
				json.Unmarshal(stdout.Bytes(), &got)
				if err := json.Unmarshal([]byte(docJSONSample(t, "../../docs/attested-tls.md")), &want); err != nil {
					t.Fatalf("the page's sample report: %v", err)
				}
				if !slices.Equal(got.Checks, want.Checks) {
					t.Fatalf("the page's sample report lists checks %v, the command reports %v", want.Checks, got.Checks)
				}
			}

		case c.ec2 && strings.HasPrefix(c.line, "sed -i "):
			src, err := os.ReadFile("../../build/Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			df := filepath.Join(tmp, "Dockerfile")
			os.WriteFile(df, src, 0o600)
			expr := strings.TrimSuffix(strings.TrimPrefix(c.line, "sed -i '"), "' build/Dockerfile")
			if out, err := exec.Command("sed", "-i", expr, df).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c.line, err, out)
			}
			got, _ := os.ReadFile(df)
			if !bytes.Contains(got, []byte(`CMD ["/enclaved", "--tls-listen", "vsock://any:8443"]`)) || bytes.Contains(got, []byte("CMD [\"/enclaved\"]\n")) {
				t.Fatalf("%s: the Dockerfile's CMD was not changed:\n%s", c.line, got)
			}

		case c.ec2 && strings.HasPrefix(c.line, `eval "$(go run ./cmd/enclavekit eif pcrs enclave.eif | sed '`):
			expr := strings.TrimSuffix(strings.TrimPrefix(c.line, `eval "$(go run ./cmd/enclavekit eif pcrs enclave.eif | sed '`), `')"`)
			var pcrs bytes.Buffer
			if code := run(ctx, []string{"eif", "pcrs", "../../build/eif/testdata/golden_v4.eif"}, &pcrs, os.Stderr); code != exitOK {
				t.Fatalf("eif pcrs: exit %d", code)
			}
			cmd := exec.Command("sed", expr)
			cmd.Stdin = &pcrs
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v", c.line, err)
			}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				k, v, ok := strings.Cut(l, "=")
				if !ok || !regexp.MustCompile(`^PCR\d+$`).MatchString(k) || len(v) != 96 {
					t.Fatalf("%s: line %q is not PCRn=HEX", c.line, l)
				}
				env[k] = v
			}

		case c.ec2 && (c.line == "make eif" || strings.HasPrefix(c.line, "nitro-cli ")):
			t.Logf("needs EC2, not run here: %s", c.line)

		default:
			t.Errorf("a command in docs/attested-tls.md that no test runs: %s", c.line)
		}
	}
}

// docJSONSample returns the page's first json block.
func docJSONSample(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```json\n")
	if !ok {
		t.Fatal("no json block in the page")
	}
	block, _, _ := strings.Cut(rest, "```")
	return block
}
