package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/atlstest"
)

// tlsEnclave is an attested TLS echo endpoint on loopback.
type tlsEnclave struct {
	addr string // tcp://127.0.0.1:PORT
	root string // PEM file of the emulator's root
	pcrs map[int][]byte
	ln   *enclave.AttestedListener
}

// replayNonce answers the Fresh request with a document for another nonce.
type replayNonce struct{ attest.Attester }

func (a replayNonce) Attest(ctx context.Context, req attest.Request) ([]byte, error) {
	if req.Nonce != nil {
		req.Nonce = make([]byte, attest.ExporterSize)
	}
	return a.Attester.Attest(ctx, req)
}

func startTLSEnclave(t *testing.T, pcrs map[int][]byte, replay bool) *tlsEnclave {
	t.Helper()
	var wrap func(attest.Attester) attest.Attester
	if replay {
		wrap = func(a attest.Attester) attest.Attester { return replayNonce{a} }
	}
	e := atlstest.Start(t, pcrs, wrap)
	return &tlsEnclave{addr: "tcp://" + e.Addr, root: e.RootFile(t), pcrs: pcrs, ln: e.Listener}
}

// tlsMITM serves ordinary TLS with its own key; doc, if set, is copied
// into its certificate.
func tlsMITM(t *testing.T, doc []byte) string {
	t.Helper()
	var exts []pkix.Extension
	if doc != nil {
		v, err := attest.MarshalExtensionValue(doc)
		if err != nil {
			t.Fatal(err)
		}
		exts = append(exts, pkix.Extension{Id: attest.ExtensionOID, Value: v})
	}
	return "tcp://" + atlstest.StartPlain(t, atlstest.SelfSigned(t, exts...))
}

func pcrFlags(pcrs map[int][]byte) []string {
	var out []string
	for i := range 3 {
		out = append(out, "--pcr", fmt.Sprintf("%d=%x", i, pcrs[i]))
	}
	return out
}

func testPCRs() map[int][]byte {
	m := map[int][]byte{}
	for i := range 3 {
		h := sha512.Sum384(fmt.Appendf(nil, "cli PCR%d", i))
		m[i] = h[:]
	}
	return m
}

func TestAttestTLSCLI(t *testing.T) {
	enc := startTLSEnclave(t, testPCRs(), false)
	debug := startTLSEnclave(t, nil, false)
	replay := startTLSEnclave(t, testPCRs(), true)
	genuine, err := attest.DocumentFromCertificate(enc.ln.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	mitmReplay := tlsMITM(t, genuine)
	mitmPlain := tlsMITM(t, nil)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := "tcp://" + closed.Addr().String()
	closed.Close()
	wrong := testPCRs()
	wrong[2] = bytes.Repeat([]byte{1}, 48)

	args := func(addr, root string, pcrs map[int][]byte, extra ...string) []string {
		a := []string{"attest", "tls", addr}
		if root != "" {
			a = append(a, "--root", root)
		}
		if pcrs != nil {
			a = append(a, pcrFlags(pcrs)...)
		}
		return append(a, extra...)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
		checks []string
	}{
		{"verified", args(enc.addr, enc.root, enc.pcrs), exitOK, "", []string{"tls1.3", "extension", "root", "max-age", "pcrs", "debug-mode", "public-key"}},
		{"verified fresh", args(enc.addr, enc.root, enc.pcrs, "--fresh"), exitOK, "", []string{"public-key", "fresh-nonce"}},
		{"wrong PCR2", args(enc.addr, enc.root, wrong), exitFailure, "FAILED PCR check: attest: the certificate's document: attest: PCR mismatch: PCR2", nil},
		{"AWS root", args(enc.addr, "", enc.pcrs), exitFailure, "FAILED root pin check", nil},
		{"stale", args(enc.addr, enc.root, enc.pcrs, "--max-age", "1ns"), exitFailure, "FAILED freshness check", nil},
		{"debug mode refused", args(debug.addr, debug.root, nil), exitFailure, "FAILED debug mode check: attest: the certificate's document: attest: document is from a debug-mode enclave (PCR0 all zeros) (pass --allow-debug only for a development enclave)", nil},
		{"debug mode allowed", args(debug.addr, debug.root, nil, "--allow-debug"), exitOK, "", []string{"public-key"}},
		{"proxy replaying the document", args(mitmReplay, enc.root, enc.pcrs), exitFailure, "FAILED public key binding check", nil},
		{"proxy with its own certificate", args(mitmPlain, enc.root, enc.pcrs), exitFailure, "FAILED attestation extension check", nil},
		{"replayed fresh document", args(replay.addr, replay.root, replay.pcrs, "--fresh"), exitFailure, "FAILED fresh session binding check", nil},
		{"nothing listening", args(closedAddr, enc.root, nil), exitFailure, "FAILED connect", nil},
		{"bad address", args("http://x", "", nil), exitUsage, "want tcp://HOST:PORT or vsock://CID:PORT", nil},
		{"no address", []string{"attest", "tls"}, exitUsage, "want exactly one ADDR", nil},
		{"bad max age", args(enc.addr, enc.root, nil, "--max-age", "0s"), exitUsage, "--max-age must be positive", nil},
		{"missing root file", args(enc.addr, "/nonexistent.pem", nil), exitFailure, "--root", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runAttestCLI(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tt.stderr)
			}
			if code == exitFailure && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("failure is not one line:\n%s", stderr)
			}
			if code != exitOK {
				return
			}
			var rep struct {
				Verified bool              `json:"verified"`
				ModuleID string            `json:"module_id"`
				PCRs     map[string]string `json:"pcrs"`
				Checks   []string          `json:"checks"`
				Fresh    *struct{ Nonce string }
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("report is not JSON: %v\n%s", err, stdout)
			}
			if !rep.Verified || rep.ModuleID == "" || len(rep.PCRs) == 0 {
				t.Fatalf("report %+v", rep)
			}
			for _, c := range tt.checks {
				if !slices.Contains(rep.Checks, c) {
					t.Errorf("checks %v lack %q", rep.Checks, c)
				}
			}
			if slices.Contains(tt.args, "--fresh") && (rep.Fresh == nil || len(rep.Fresh.Nonce) != 2*attest.ExporterSize) {
				t.Fatalf("no fresh nonce in the report:\n%s", stdout)
			}
			if hasPCR := slices.Contains(tt.args, "--pcr"); hasPCR == strings.Contains(stdout, `"warning": "no --pcr given`) || hasPCR == strings.Contains(stderr, "WARNING: no --pcr given") {
				t.Fatalf("the any-image warning is wrong (--pcr given: %v):\n%s\n%s", hasPCR, stdout, stderr)
			}
			if pcr0 := rep.PCRs["0"]; tt.name == "verified" && pcr0 != hex.EncodeToString(enc.pcrs[0]) {
				t.Fatalf("PCR0 %s", pcr0)
			}
		})
	}
}
