package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/internal/enclaved"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
)

// TestTutorialPartA runs docs/tutorial.md's A2 as written (three
// processes: log sink, enclaved, calls; each on a free loopback port in
// place of 5000 and 5001, in this process) and A5's two enclavekit
// commands (the nonce, jq and base64 steps done in Go), failure paths
// included. A3 and A4 run in examples/tutorial.
func TestTutorialPartA(t *testing.T) {
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "tcp://" + ln.Addr().String()
	}
	ports := strings.NewReplacer("tcp://127.0.0.1:5000", free(), "tcp://127.0.0.1:5001", free())
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { cancel(); bg.Wait() }()

	var cmds []docCommand
	for _, c := range docCommands(t, "../../docs/tutorial.md") {
		if strings.HasPrefix(c.line, "go run ./cmd/enclavekit logs") || strings.HasPrefix(c.line, "go run ./cmd/enclaved ") ||
			strings.HasPrefix(c.line, "go run ./cmd/enclavekit health") || strings.HasPrefix(c.line, "go run ./cmd/enclavekit call") {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) != 5 {
		t.Fatalf("A2 has %d commands, want the 5 this test knows", len(cmds))
	}
	sinkOut := &syncbuf.Buffer{}
	for _, c := range cmds {
		args := strings.Fields(ports.Replace(c.line))[3:]
		for i, a := range args { // the shell's quotes
			args[i] = strings.Trim(a, "'")
		}
		switch {
		case strings.HasPrefix(c.line, "go run ./cmd/enclavekit logs"):
			bg.Go(func() { run(ctx, args, sinkOut, sinkOut) })
			waitFor(t, func() bool { return strings.Contains(sinkOut.String(), "listening on") })
		case strings.HasPrefix(c.line, "go run ./cmd/enclaved "):
			_, _, out := startEnclaved(t, ctx, &bg, args, 30*time.Second)
			if !strings.Contains(out.String(), "enclaved: emulated NSM: PCR0 ") {
				t.Errorf("enclaved does not print its emulated PCRs:\n%s", out.String())
			}
		default:
			wantCode, wantErr := exitOK, ""
			if e, ok := strings.CutPrefix(c.comment, "exit 1: "); ok {
				wantCode, wantErr = exitFailure, e
			}
			var stdout, stderr bytes.Buffer
			code := run(ctx, args, &stdout, &stderr)
			if code != wantCode || !strings.Contains(stderr.String(), wantErr) {
				t.Fatalf("%s: exit %d, want %d with %q\n%s%s", c.line, code, wantCode, wantErr, stdout.String(), stderr.String())
			}
			if strings.Contains(c.line, "health") && (!strings.Contains(stdout.String(), `"dev": true`) || !strings.Contains(stdout.String(), `"overridden": true`)) {
				t.Errorf("health, as the page says, shows dev and the overridden checks:\n%s", stdout.String())
			}
		}
	}
	// The sink shows the enclave's records with the access log at debug.
	waitFor(t, func() bool {
		return strings.Contains(sinkOut.String(), "enclave=127.0.0.1") && strings.Contains(sinkOut.String(), "attrs.method=echo")
	})

	// A5: a document over our own nonce, then verify it, against a
	// development enclave whose emulator root is on disk (A4's greeter
	// writes it with -emulator-root; enclaved has the same flag).
	dir := t.TempDir()
	root := filepath.Join(dir, "emu-root.pem")
	a5, _, _ := startEnclaved(t, ctx, &bg, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none", "--emulator-root", root}, 30*time.Second)
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var stdout, stderr bytes.Buffer
	req := fmt.Sprintf(`{"1": {"$bytes": %q}}`, base64.StdEncoding.EncodeToString(nonce))
	if code := run(ctx, []string{"call", "--addr", a5, "enclavekit.attest", req}, &stdout, &stderr); code != exitOK {
		t.Fatalf("A5 call: exit %d: %s", code, stderr.String())
	}
	var resp map[string]string
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil || resp["1"] == "" {
		t.Fatalf("A5 call printed %s (%v)", stdout.String(), err)
	}
	doc := filepath.Join(dir, "doc.b64")
	os.WriteFile(doc, []byte(resp["1"]), 0o600)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"attest", "verify", "--root", root, "--nonce", hex.EncodeToString(nonce), "--max-age", "1m", doc}, exitOK, `"verified": true`, ""},
		{[]string{"attest", "verify", "--nonce", hex.EncodeToString(nonce), "--max-age", "1m", doc}, exitFailure, "", "FAILED root pin check"},
		{[]string{"attest", "verify", "--root", root, "--nonce", strings.Repeat("00", 32), doc}, exitFailure, "", "FAILED nonce check"},
		{[]string{"attest", "verify", "--root", root, "--pcr", "0=" + strings.Repeat("ab", 48), doc}, exitFailure, "", "FAILED PCR check"},
		{[]string{"attest", "verify", "--root", root, "--pcr", "0=" + hex.EncodeToString(nsmtest.DevPCRs()[0]), doc}, exitOK, `"pcr0"`, ""},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := run(ctx, tc.args, &stdout, &stderr); code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d\n%s%s", tc.args, code, stdout.String(), stderr.String())
		}
	}
}

// waitFor polls cond for up to 30 s.
// startEnclaved runs enclaved with args in the background until ctx ends
// (bg waits for it) and returns, once it listens within the given time,
// its address, its attested TLS address ("" without --tls-listen) and its
// output.
func startEnclaved(t *testing.T, ctx context.Context, bg *sync.WaitGroup, args []string, within time.Duration) (addr, tlsAddr string, out *syncbuf.Buffer) {
	t.Helper()
	ready, tlsReady := make(chan string, 1), make(chan string, 1)
	out = &syncbuf.Buffer{}
	bg.Go(func() {
		enclaved.Run(ctx, args, enclaved.Env{Stdout: out, Stderr: out,
			Ready: func(a string) { ready <- a }, TLSReady: func(a string) { tlsReady <- a }})
	})
	timeout := time.After(within)
	select {
	case addr = <-ready:
	case <-timeout:
		t.Fatalf("enclaved %s did not start within %v:\n%s", strings.Join(args, " "), within, out.String())
	}
	if slices.Contains(args, "--tls-listen") {
		select {
		case tlsAddr = <-tlsReady:
		case <-timeout:
			t.Fatalf("enclaved %s did not start its TLS listener within %v:\n%s", strings.Join(args, " "), within, out.String())
		}
	}
	return addr, tlsAddr, out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}
