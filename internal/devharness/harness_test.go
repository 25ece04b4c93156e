package devharness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun is "make dev" as a test: every step passes and says what it
// proved.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := Run(t.Context(), Options{Out: &out}); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"[1/8] health", "dev=true", "overridden by --dev",
		"[2/8] attestation", "PCR0 ", "PCR1 ", "PCR2 ", "refused as expected",
		"[3/8] echo", "byte for byte",
		"[4/8] egress", "200", "TLS 1.3 inside the enclave", `403 from the proxy, reason "not_allowlisted", nothing dialled`,
		"[5/8] credentials", "read with the SDK's IMDSv2 client (session token), pushed into the enclave",
		"[6/8] kms", "GenerateDataKey with Recipient sealed", "Decrypt of the stored CiphertextBlob opened them",
		"another PCR0: refused by KMS", "no data key, state or credential in them, nor in any log line",
		"[7/8] attested tls", "fresh-nonce", "canary is not among them", "replaying the genuine document (key mismatch)", "ordinary certificate (no attestation extension)",
		"[8/8] logs", "fresh marker",
		"all 8 steps passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "FAILED") {
		t.Errorf("a step failed:\n%s", out.String())
	}
}

// TestKill stops each component before the step that needs it: Run must
// fail, naming that step, instead of passing or hanging.
func TestKill(t *testing.T) {
	tests := []struct {
		component string
		step      int
		name      string
	}{
		{ComponentEnclave, 1, "health"},
		{ComponentProxy, 4, "egress"},
		{ComponentHTTPS, 4, "egress"},
		{ComponentIMDS, 5, "credentials"},
		{ComponentKMS, 6, "kms"},
		{ComponentLogSink, 8, "logs"},
	}
	for _, tt := range tests {
		t.Run(tt.component, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(t.Context(), Options{Out: &out, Kill: tt.component, StepTimeout: 3 * time.Second})
			var se *StepError
			if !errors.As(err, &se) {
				t.Fatalf("Run = %v, want a *StepError\n%s", err, out.String())
			}
			if se.Step != tt.step || se.Name != tt.name {
				t.Fatalf("failed at step %d (%s), want %d (%s): %v", se.Step, se.Name, tt.step, tt.name, err)
			}
			wantLine := fmt.Sprintf("enclavekit dev: step %d (%s) failed", tt.step, tt.name)
			if !strings.Contains(out.String(), wantLine) {
				t.Fatalf("output lacks %q:\n%s", wantLine, out.String())
			}
			for i := 1; i < tt.step; i++ {
				if !strings.Contains(out.String(), fmt.Sprintf("[%d/8]", i)) {
					t.Fatalf("step %d did not run before the failure:\n%s", i, out.String())
				}
			}
		})
	}
}

func TestKeepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Out: pw, Keep: true})
		pw.Close()
	}()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), "until Ctrl-C") {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatalf("output ended early: %v\n%s", err, out.String())
		}
		out.Write(buf[:n])
	}
	for _, want := range []string{"health --addr tcp://127.0.0.1:", "attest verify --root ", "--pcr 0=", "attest tls tcp://127.0.0.1:", "curl --proxy http://127.0.0.1:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--keep output lacks %q", want)
		}
	}
	// The files the commands refer to exist while the system runs and are
	// removed when it stops.
	m := regexp.MustCompile(`\(The files in (.+) are removed on exit\.\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("--keep output does not name its temporary directory:\n%s", out.String())
	}
	dir := m[1]
	for _, f := range []string{"emulator-root.pem", "attestation.cbor", "https-server.pem"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s while running: %v (size %d)", f, err, sizeOf(fi))
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary directory %s left behind after Run returned: %v", dir, err)
	}
}

func sizeOf(fi fs.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		opts    Options
		wantErr string
	}{
		{Options{Out: io.Discard}, ""},
		{Options{}, "Out is nil"},
		{Options{Out: io.Discard, Kill: "vault"}, `cannot kill "vault"`},
		{Options{Out: io.Discard, StepTimeout: -1}, "negative"},
	}
	for _, tt := range tests {
		err := tt.opts.Validate()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
}
