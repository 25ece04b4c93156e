package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kmsTestdata = "../../enclave/kms/internal/cms/testdata/"

func TestKMSUnwrap(t *testing.T) {
	sample := kmsTestdata + "edgebit_ciphertext_for_recipient.ber"
	key := kmsTestdata + "edgebit_recipient_key.pem"
	want, _ := os.ReadFile(kmsTestdata + "edgebit_plaintext.hex")
	dir := t.TempDir()
	raw, _ := os.ReadFile(sample)
	b64 := filepath.Join(dir, "ct.b64")
	os.WriteFile(b64, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)
	corrupt := filepath.Join(dir, "corrupt.ber")
	c := append([]byte(nil), raw...)
	c[20] ^= 1
	os.WriteFile(corrupt, c, 0o600)

	// The same key as PKCS#8, and another key.
	pemBytes, _ := os.ReadFile(key)
	blk, _ := pem.Decode(pemBytes)
	k, _ := x509.ParsePKCS1PrivateKey(blk.Bytes)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	pkcs8 := filepath.Join(dir, "key8.pem")
	os.WriteFile(pkcs8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPath := filepath.Join(dir, "other.pem")
	os.WriteFile(otherPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)}), 0o600)

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"raw PKCS#1", []string{"kms", "unwrap", "--key", key, sample}, 0, strings.TrimSpace(string(want)), ""},
		{"base64 PKCS#8 flags last", []string{"kms", "unwrap", b64, "--base64", "--key", pkcs8}, 0, strings.TrimSpace(string(want)), ""},
		{"another key", []string{"kms", "unwrap", "--key", otherPath, sample}, 1, "", "is for another key: its recipient id is 9631a0c6"},
		{"corrupt", []string{"kms", "unwrap", "--key", key, corrupt}, 1, "", "is not a KMS CiphertextForRecipient that"},
		{"base64 given raw", []string{"kms", "unwrap", "--base64", "--key", key, sample}, 1, "", "not base64 (drop --base64"},
		{"no key", []string{"kms", "unwrap", sample}, 2, "", "--key is required"},
		{"no file", []string{"kms", "unwrap", "--key", key}, 2, "", "want exactly one FILE"},
		{"key not PEM", []string{"kms", "unwrap", "--key", sample, sample}, 1, "", "no PEM block"},
		{"unknown subcommand", []string{"kms", "wrap"}, 2, "", `unknown subcommand "wrap"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code || strings.TrimSpace(stdout) != tc.stdout || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("want one line, got %q", stderr)
			}
		})
	}
}

func TestKMSPolicy(t *testing.T) {
	pcr := strings.Repeat("ab", 48)
	code, stdout, stderr := runCLI(t, "kms", "policy", "--pcr", "0="+pcr, "--pcr", "8="+strings.Repeat("cd", 48), "--role", "arn:aws:iam::111122223333:role/app")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var st kmsPolicyStatement
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatal(err)
	}
	cond := st.Condition["StringEqualsIgnoreCase"]
	if st.Effect != "Allow" || st.Principal["AWS"] != "arn:aws:iam::111122223333:role/app" || len(cond) != 2 ||
		cond["kms:RecipientAttestation:ImageSha384"] != pcr || cond["kms:RecipientAttestation:PCR8"] != strings.Repeat("cd", 48) ||
		strings.Join(st.Action, ",") != "kms:Decrypt,kms:GenerateDataKey,kms:GenerateDataKeyPair" {
		t.Fatalf("statement %+v", st)
	}

	f := newEIFFixture(t)
	eifPath := filepath.Join(f.dir, "app.eif")
	f.build(t, eifPath)
	code, stdout, stderr = runCLI(t, "kms", "policy", "--eif", eifPath, "--action", "kms:Decrypt")
	if code != 0 {
		t.Fatalf("--eif: exit %d: %s", code, stderr)
	}
	_, described, _ := runCLI(t, "eif", "describe", eifPath)
	st = kmsPolicyStatement{}
	json.Unmarshal([]byte(stdout), &st)
	cond = st.Condition["StringEqualsIgnoreCase"]
	if len(cond) != 3 || !strings.Contains(described, cond["kms:RecipientAttestation:ImageSha384"]) ||
		!strings.Contains(described, cond["kms:RecipientAttestation:PCR1"]) || !strings.Contains(described, cond["kms:RecipientAttestation:PCR2"]) {
		t.Fatalf("policy from the EIF %v does not match eif describe:\n%s", cond, described)
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"kms", "policy"}, 2, "give either --eif FILE or at least one --pcr"},
		{[]string{"kms", "policy", "--pcr", "0=" + strings.Repeat("00", 48)}, 1, "PCR0 is all zeros"},
		// Debug-mode enclaves report every PCR as zeros, not only PCR0.
		{[]string{"kms", "policy", "--pcr", "1=" + strings.Repeat("00", 48), "--pcr", "2=" + strings.Repeat("00", 48)}, 1, "PCR1 is all zeros"},
		{[]string{"kms", "policy", "--pcr", "0=" + pcr, "--pcr", "8=" + strings.Repeat("00", 48)}, 1, "PCR8 is all zeros"},
		// PCR1 (kernel), PCR3 (the parent's role) and PCR4 (its instance)
		// are the same for any enclave the parent builds and runs there.
		{[]string{"kms", "policy", "--pcr", "3=" + pcr, "--pcr", "4=" + pcr}, 1, "measures the enclave's own code whole"},
		{[]string{"kms", "policy", "--pcr", "1=" + pcr}, 1, "measures the enclave's own code whole"},
		// PCR2 alone: the parent's own kernel and init around the app.
		{[]string{"kms", "policy", "--pcr", "2=" + pcr, "--pcr", "4=" + pcr}, 1, "measures the enclave's own code whole"},
		{[]string{"kms", "policy", "--pcr", "1=" + pcr, "--pcr", "2=" + pcr}, 0, ""},
		{[]string{"kms", "policy", "--pcr", "8=" + pcr}, 0, ""},
		{[]string{"kms", "policy", "--pcr", "0=" + pcr, "--action", "kms:Encrypt"}, 2, "takes no Recipient"},
		{[]string{"kms", "policy", "--pcr", "0=abc"}, 2, "want 48 bytes of hex"},
		{[]string{"kms", "policy", "--eif", filepath.Join(f.dir, "missing.eif")}, 1, "missing.eif"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, stderr)
		}
	}
}
