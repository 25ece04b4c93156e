package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/enclavekit/enclavekit/build/eif"
	"github.com/enclavekit/enclavekit/enclave/kms"
)

const kmsUsage = `usage:
  enclavekit kms unwrap --key KEY.pem [--base64] FILE
  enclavekit kms policy (--eif FILE | --pcr N=HEX...) [--role ARN] [--action ACTION]...

unwrap opens a KMS CiphertextForRecipient (raw bytes, or base64 with
--base64; "-" reads standard input) with an RSA private key in PKCS#1 or
PKCS#8 PEM and prints the plaintext as hex: a debugging aid and a
conformance check against other implementations.

policy prints the key policy statement that allows the actions (default
kms:Decrypt, kms:GenerateDataKey, kms:GenerateDataKeyPair) only with a
Recipient attestation document carrying these measurements: from an EIF
(PCR0, PCR1, PCR2, and PCR8 when signed) or from --pcr. Paste it into the
key policy's Statement list.
`

func runKMS(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "enclavekit kms: want a subcommand: unwrap or policy\n\n", kmsUsage)
		return exitUsage
	}
	switch args[0] {
	case "unwrap":
		return kmsUnwrap(args[1:], stdout, stderr)
	case "policy":
		return kmsPolicy(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, kmsUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "enclavekit kms: unknown subcommand %q; want unwrap or policy\n\n%s", args[0], kmsUsage)
	return exitUsage
}

func kmsUnwrap(args []string, stdout, stderr io.Writer) int {
	const name = "enclavekit kms unwrap"
	fs := newKMSFlagSet(name, stderr)
	keyPath := fs.String("key", "", "RSA private key `FILE` (PKCS#1 or PKCS#8 PEM)")
	b64 := fs.Bool("base64", false, "FILE holds base64 (as KMS's JSON carries it), not raw bytes")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if *keyPath == "" {
		fmt.Fprintf(stderr, "%s: --key is required: the RSA private key whose public key was in the attestation document\n", name)
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want exactly one FILE (the CiphertextForRecipient, or - for standard input), got %d\n", name, len(pos))
		return exitUsage
	}
	key, err := kmsReadRSAKey(*keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	ct, err := kmsReadInput(pos[0], *b64)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	s, err := kms.OpenRecipient(key, ct)
	if err != nil {
		// Say why where it is safe to: the recipient id is public.
		if env, mine, idErr := kms.RecipientKeyID(ct, &key.PublicKey); idErr == nil && !slices.Equal(env, mine) {
			fmt.Fprintf(stderr, "%s: %s is for another key: its recipient id is %x, the id of %s is %x\n", name, pos[0], env, *keyPath, mine)
			return exitFailure
		}
		fmt.Fprintf(stderr, "%s: %s is not a KMS CiphertextForRecipient that %s opens (malformed, corrupted, or the wrong encoding: try --base64)\n", name, pos[0], *keyPath)
		return exitFailure
	}
	fmt.Fprintln(stdout, hex.EncodeToString(s.Bytes()))
	return exitOK
}

func kmsReadRSAKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("key %s: no PEM block; want an RSA private key in PKCS#1 or PKCS#8 PEM", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: the %q PEM block is neither a PKCS#1 nor a PKCS#8 private key", path, blk.Type)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: not an RSA key; KMS Recipient keys are RSA", path)
	}
	return rk, nil
}

func kmsReadInput(path string, b64 bool) ([]byte, error) {
	b, err := readInput(path, 4*kms.MaxEnvelopeSize)
	if err != nil {
		return nil, err
	}
	if !b64 {
		return b, nil
	}
	out, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64 (drop --base64 for raw bytes)", path)
	}
	return out, nil
}

// kmsPolicyStatement is one key policy statement (the IAM policy grammar).
type kmsPolicyStatement struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Principal map[string]string            `json:"Principal"`
	Action    []string                     `json:"Action"`
	Resource  string                       `json:"Resource"`
	Condition map[string]map[string]string `json:"Condition"`
}

var kmsDefaultActions = []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair"}

// kmsRecipientActions are the KMS actions that take a Recipient, so that
// the kms:RecipientAttestation condition keys exist in their requests.
var kmsRecipientActions = []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:GenerateRandom", "kms:DeriveSharedSecret"}

func kmsPolicy(args []string, stdout, stderr io.Writer) int {
	const name = "enclavekit kms policy"
	fs := newKMSFlagSet(name, stderr)
	eifPath := fs.String("eif", "", "take PCR0, PCR1, PCR2 (and PCR8 if signed) from this EIF `FILE`")
	role := fs.String("role", "arn:aws:iam::ACCOUNT:role/ROLE", "the instance role `ARN` that calls KMS")
	pcrs := attestPCRFlags{}
	fs.Var(pcrs, "pcr", "a required PCR value `N=HEX` (repeatable)")
	var actions listFlag
	fs.Var(&actions, "action", "an allowed `ACTION` (repeatable; default kms:Decrypt, kms:GenerateDataKey, kms:GenerateDataKeyPair)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q; the EIF goes in --eif FILE\n", name, pos)
		return exitUsage
	}
	if (*eifPath == "") == (len(pcrs) == 0) {
		fmt.Fprintf(stderr, "%s: give either --eif FILE or at least one --pcr N=HEX\n", name)
		return exitUsage
	}
	for _, a := range actions {
		if !slices.Contains(kmsRecipientActions, a) {
			fmt.Fprintf(stderr, "%s: --action %q takes no Recipient, so the attestation conditions cannot hold; want one of %s\n", name, a, strings.Join(kmsRecipientActions, ", "))
			return exitUsage
		}
	}
	if len(actions) == 0 {
		actions = kmsDefaultActions
	}
	if *eifPath != "" {
		img, _, err := eif.ReadFile(*eifPath, eif.ParseOptions{})
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitFailure
		}
		m := img.Measure()
		pcrs[0], pcrs[1], pcrs[2] = m.PCR0[:], m.PCR1[:], m.PCR2[:]
		if m.PCR8 != nil {
			pcrs[8] = m.PCR8[:]
		}
	}
	// A debug-mode enclave reports every PCR as zeros, so a zero value in
	// any condition (not only PCR0) can match one.
	for _, i := range slices.Sorted(maps.Keys(pcrs)) {
		if !slices.ContainsFunc(pcrs[i], func(b byte) bool { return b != 0 }) {
			fmt.Fprintf(stderr, "%s: PCR%d is all zeros, which every debug-mode enclave reports: such a policy would release keys to any enclave run with --debug-mode\n", name, i)
			return exitFailure
		}
	}
	// PCR1 (kernel and bootstrap), PCR3 (the parent's IAM role) and PCR4
	// (the parent's instance) are shared by every enclave the parent can
	// build and run there, and PCR2 (the application) alone leaves the
	// kernel and init around it to the parent: the whole image must be
	// named by PCR0, PCR1 with PCR2, or PCR8 (its signer).
	_, p0 := pcrs[0]
	_, p1 := pcrs[1]
	_, p2 := pcrs[2]
	_, p8 := pcrs[8]
	if !p0 && !p8 && !(p1 && p2) {
		fmt.Fprintf(stderr, "%s: no PCR given measures the enclave's own code whole: name PCR0 (the image), PCR1 and PCR2 (kernel and application), or PCR8 (the signing certificate), or an enclave the parent builds would get the key\n", name)
		return exitFailure
	}
	cond := map[string]string{}
	for i, v := range pcrs {
		key := fmt.Sprintf("kms:RecipientAttestation:PCR%d", i)
		if i == 0 {
			key = "kms:RecipientAttestation:ImageSha384"
		}
		cond[key] = hex.EncodeToString(v)
	}
	st := kmsPolicyStatement{
		Sid:       "AllowOnlyTheAttestedEnclave",
		Effect:    "Allow",
		Principal: map[string]string{"AWS": *role},
		Action:    actions,
		Resource:  "*",
		Condition: map[string]map[string]string{"StringEqualsIgnoreCase": cond},
	}
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	fmt.Fprintln(stdout, string(out))
	return exitOK
}

func newKMSFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, kmsUsage, "\nflags:\n"); fs.PrintDefaults() }
	return fs
}
