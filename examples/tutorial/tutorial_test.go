// Package tutorial_test builds and runs the programs of docs/tutorial.md
// (Part A, A3 and A4), and checks that the page quotes them as they are.
package tutorial_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTutorialQuotesThePrograms: the tutorial's code blocks are these
// files, byte for byte.
func TestTutorialQuotesThePrograms(t *testing.T) {
	doc, err := os.ReadFile("../../docs/tutorial.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"greeter-enclave/main.go", "greeter-parent/main.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), "```go\n"+string(b)+"```\n") {
			t.Errorf("docs/tutorial.md does not quote examples/tutorial/%s as it is", f)
		}
	}
}

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestTutorialA4 runs A4 as the page shows it: the enclave in development
// mode writing the emulator's root, the parent attesting and calling it,
// and the two failure paths.
func TestTutorialA4(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two programs")
	}
	dir := t.TempDir()
	enclaveBin := build(t, dir, "greeter-enclave")
	parentBin := build(t, dir, "greeter-parent")
	root := filepath.Join(dir, "emu-root.pem")
	addr := "tcp://" + freePort(t)
	sink := "tcp://" + freePort(t) // nothing listens: logs must not block

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	enc := exec.CommandContext(ctx, enclaveBin, "-dev", "-emulator-root", root, "-listen", addr, "-log-sink", sink)
	stderr, _ := enc.StderrPipe()
	if err := enc.Start(); err != nil {
		t.Fatal(err)
	}
	defer enc.Wait()
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "enclave server listening") {
				close(listening)
				for sc.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(60 * time.Second):
		t.Fatal("greeter-enclave did not start listening")
	}

	run := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, parentBin, args...).CombinedOutput()
		return string(out), err
	}
	out, err := run("-addr", addr, "-root", root)
	if err != nil {
		t.Fatalf("greeter-parent: %v\n%s", err, out)
	}
	for _, want := range []string{
		"attested: module i-", "PCR0 1925f99baf2fe94d75e0b20ae38b4d40b19ffa36503a23ec6fbf0f66bda5f01ecb06e766856e62d956fa96d922b3c39d",
		"hello, parent <nil>", "true remote error 1 (bad request)", "true remote error 2 (unknown method)", "code 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("greeter-parent output lacks %q:\n%s", want, out)
		}
	}
	if out, err := run("-addr", addr, "-root", root, "-pcr0", strings.Repeat("ab", 48)); err == nil ||
		!strings.Contains(out, "the enclave runs a different image") || !strings.Contains(out, "PCR mismatch: PCR0") {
		t.Errorf("another PCR0: %v\n%s", err, out)
	}
	if out, err := run("-addr", addr, "-pcr0", "1925f99baf2fe94d75e0b20ae38b4d40b19ffa36503a23ec6fbf0f66bda5f01ecb06e766856e62d956fa96d922b3c39d"); err == nil ||
		!strings.Contains(out, "attestation rejected") || !strings.Contains(out, "root") {
		t.Errorf("no -root: %v\n%s", err, out)
	}
	cancel()
}
