package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/fxamacker/cbor/v2"
)

const attestCorpusDir = "../../attest/testdata"

func runAttestCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAttestCLI(t *testing.T) {
	valid := filepath.Join(attestCorpusDir, "valid", "hf_nitrite_test_hex_attestation_doc.cbor")
	invalid := filepath.Join(attestCorpusDir, "invalid", "eternisai_remote_attestation_verifier_invalid_attestation.cbor")
	raw, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hexFile := filepath.Join(dir, "doc.hex")
	b64File := filepath.Join(dir, "doc.b64")
	os.WriteFile(hexFile, []byte(hex.EncodeToString(raw)+"\n"), 0o600)
	os.WriteFile(b64File, []byte(base64.StdEncoding.EncodeToString(raw)), 0o600)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a document"), 0o600)

	// An emulator document, verified with --root, --nonce and --pcr.
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := bytes.Repeat([]byte{7}, 48)
	emu.SetPCR(0, pcr0)
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	emuDoc, err := n.Attest(context.Background(), attest.Request{Nonce: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	emuFile := filepath.Join(dir, "emu.cbor")
	rootFile := filepath.Join(dir, "root.pem")
	os.WriteFile(emuFile, emuDoc, 0o600)
	os.WriteFile(rootFile, emu.RootPEM(), 0o600)
	pcrFlag := "0=" + hex.EncodeToString(pcr0)

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   string // substring
		stderr   string // substring
		verified bool
	}{
		// This published document comes from a debug-mode enclave (PCR0 zeros).
		{"verify debug-mode refused", []string{"attest", "verify", valid}, 1, "", "FAILED debug mode check", false},
		{"verify corpus", []string{"attest", "verify", "--allow-debug", valid}, 0, `"module_id": "i-0809849710bf1b61b-enc017cc45400406a27"`, "WARNING: debug-mode document accepted", true},
		{"verify hex", []string{"attest", "verify", "--allow-debug", hexFile}, 0, `"timestamp": "2021-10-28T17:02:02.077Z"`, "WARNING: no --pcr given", true},
		{"verify base64", []string{"attest", "verify", "--allow-debug", b64File}, 0, `"not_after": "2021-10-28T17:44:13Z"`, "", true},
		{"verify stale", []string{"attest", "verify", "--max-age", "1h", valid}, 1, "", "FAILED freshness check", false},
		{"verify invalid", []string{"attest", "verify", invalid}, 1, "", "FAILED signature check", false},
		{"verify garbage", []string{"attest", "verify", garbage}, 1, "", "FAILED format check", false},
		{"verify emulator without root", []string{"attest", "verify", emuFile}, 1, "", "FAILED root pin check", false},
		{"verify emulator", []string{"attest", "verify", "--root", rootFile, "--max-age", "1m", "--nonce", "010203", "--pcr", pcrFlag, emuFile}, 0, `"nonce": "AQID"`, "", true},
		{"verify reports its checks", []string{"attest", "verify", "--root", rootFile, "--max-age", "1m", "--nonce", "010203", "--pcr", pcrFlag, emuFile}, 0,
			`"checks": [
    "format",
    "signature",
    "root",
    "max-age",
    "nonce",
    "pcr0",
    "debug-mode"
  ]`, "", true},
		{"flags after file", []string{"attest", "verify", emuFile, "--root", rootFile, "--nonce", "010203"}, 0, `"verified": true`, "", true},
		{"wrong nonce", []string{"attest", "verify", "--root", rootFile, "--nonce", "0102", emuFile}, 1, "", "FAILED nonce check", false},
		{"wrong pcr", []string{"attest", "verify", "--root", rootFile, "--pcr", "1=" + hex.EncodeToString(pcr0), emuFile}, 1, "", "FAILED PCR check", false},
		{"missing root file", []string{"attest", "verify", "--root", filepath.Join(dir, "nope.pem"), emuFile}, 1, "", "root:", false},
		{"missing file", []string{"attest", "verify", filepath.Join(dir, "nope")}, 1, "", "no such file", false},
		{"bad pcr flag", []string{"attest", "verify", "--pcr", "40=00", valid}, 2, "", "PCR index", false},
		{"bad nonce flag", []string{"attest", "verify", "--nonce", "zz", valid}, 2, "", "want hex", false},
		{"no file", []string{"attest", "verify"}, 2, "", "exactly one FILE", false},
		{"two files", []string{"attest", "verify", valid, valid}, 2, "", "exactly one FILE", false},
		{"no subcommand", []string{"attest"}, 2, "", "usage:", false},
		{"unknown subcommand", []string{"attest", "frobnicate"}, 2, "", "unknown subcommand", false},
		{"inspect", []string{"attest", "inspect", invalid}, 0, `"verified": false`, "UNVERIFIED", false},
		{"inspect garbage", []string{"attest", "inspect", garbage}, 1, "", "FAILED format check", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runAttestCLI(tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("code %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") > 0 && tc.name != "inspect garbage" {
				t.Errorf("failure report is not one line: %q", stderr)
			}
			if code == 0 {
				var m map[string]any
				if err := json.Unmarshal([]byte(stdout), &m); err != nil {
					t.Fatalf("output is not JSON: %v", err)
				}
				if m["verified"] != tc.verified {
					t.Fatalf("verified = %v", m["verified"])
				}
			}
		})
	}
}

// Error messages can quote certificate names from the (untrusted)
// document: the one-line report must not pass control characters (terminal
// escapes, newlines, bidi overrides) through to the terminal.
func TestAttestCLIFailureLineIsPrintable(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "aws\x1b]0;pwned\x07\x1b[2J\nFAKE OK\u202eevil\x7f"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}
	evilRoot, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := emu.Certificates()
	payload, err := cbor.Marshal(map[string]any{
		"module_id": "i-x", "digest": "SHA384", "timestamp": uint64(time.Now().UnixMilli()),
		"pcrs": map[int][]byte{0: make([]byte, 48)}, "certificate": leaf, "cabundle": [][]byte{evilRoot},
		"public_key": nil, "user_data": nil, "nonce": nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := emu.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "evil.cbor")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runAttestCLI("attest", "verify", file)
	if code != 1 || !strings.Contains(stderr, "FAILED root pin check") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	line := strings.TrimSuffix(stderr, "\n")
	for _, r := range line {
		if !unicode.IsPrint(r) {
			t.Fatalf("report contains %U: %q", r, stderr)
		}
	}
}
