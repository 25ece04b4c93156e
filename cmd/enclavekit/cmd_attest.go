package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/enclavekit/enclavekit/attest"
)

const attestUsage = `usage:
  enclavekit attest verify [--root FILE.pem] [--max-age DUR] [--nonce HEX] [--pcr N=HEX]... [--allow-debug] FILE
  enclavekit attest inspect FILE
  enclavekit attest tls ADDR [--root FILE.pem] [--pcr N=HEX]... [--fresh] [--max-age DUR] [--allow-debug]

verify checks the document (CBOR, COSE_Sign1 ES384, certificate chain to the
AWS Nitro root or --root at the document's timestamp, signature, then the
optional freshness, nonce and PCRs) and prints it as JSON. inspect prints a
document WITHOUT verifying anything. FILE may be raw CBOR, hex or base64;
"-" reads standard input.
`

func runAttest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, attestUsage)
		return exitUsage
	}
	switch args[0] {
	case "verify":
		return attestVerify(args[1:], stdout, stderr)
	case "inspect":
		return attestInspect(args[1:], stdout, stderr)
	case "tls":
		return attestTLS(ctx, args[1:], stdout, stderr) // cmd_attest_tls.go
	case "help", "-h", "--help":
		fmt.Fprint(stdout, attestUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "enclavekit attest: unknown subcommand %q\n%s", args[0], attestUsage)
	return exitUsage
}

// attestPCRFlags collects repeated --pcr N=HEX.
type attestPCRFlags map[int][]byte

func (p attestPCRFlags) String() string { return fmt.Sprintf("%d PCRs", len(p)) }

func (p attestPCRFlags) Set(s string) error {
	n, h, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want N=HEX")
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 || i >= attest.MaxPCRs {
		return fmt.Errorf("PCR index %q: want 0..%d", n, attest.MaxPCRs-1)
	}
	v, err := hex.DecodeString(h)
	if err != nil || len(v) != attest.PCRSize {
		return fmt.Errorf("PCR%d value: want %d bytes of hex", i, attest.PCRSize)
	}
	if _, dup := p[i]; dup {
		return fmt.Errorf("PCR%d given twice", i)
	}
	p[i] = v
	return nil
}

type attestHexFlag struct{ b []byte }

func (h *attestHexFlag) String() string { return hex.EncodeToString(h.b) }

func (h *attestHexFlag) Set(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return errors.New("want hex")
	}
	if len(b) > attest.MaxFieldSize {
		return fmt.Errorf("%d bytes, limit %d", len(b), attest.MaxFieldSize)
	}
	h.b = b
	return nil
}

func attestVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit attest verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, attestUsage, "\nflags:\n"); fs.PrintDefaults() }
	root := fs.String("root", "", "PEM `FILE` of trusted root certificates (default: the pinned AWS Nitro root)")
	maxAge := fs.Duration("max-age", 0, "reject documents older than `DUR` (0 skips freshness, for archived documents)")
	var nonce attestHexFlag
	fs.Var(&nonce, "nonce", "expected nonce, `HEX`")
	pcrs := attestPCRFlags{}
	fs.Var(pcrs, "pcr", "expected PCR value `N=HEX` (repeatable)")
	allowDebug := fs.Bool("allow-debug", false, "accept a debug-mode document (PCR0 all zeros), for development only")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 1 {
		return usageFail(fs, stderr, "enclavekit attest verify: want exactly one FILE (the document; - for standard input), got %d", len(pos))
	}
	if *maxAge < 0 {
		fmt.Fprintln(stderr, "enclavekit attest verify: --max-age must not be negative")
		return exitUsage
	}
	opts := attest.VerifyOptions{MaxAge: *maxAge, PCRs: pcrs}
	if *maxAge > 0 {
		opts.CurrentTime = time.Now()
	}
	if nonce.b != nil {
		opts.Nonce = nonce.b
	}
	if *root != "" {
		pool, err := attestLoadRoots(*root)
		if err != nil {
			fmt.Fprintf(stderr, "enclavekit attest verify: root: %v\n", err)
			return exitFailure
		}
		opts.Roots = pool
	}
	doc, err := attestReadDocument(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit attest verify: %v\n", err)
		return exitFailure
	}
	d, err := attest.Verify(doc, opts)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit attest verify: FAILED %s check: %s\n", attestCheckName(err), attestOneLine(err))
		return exitFailure
	}
	// The checks that ran, in order; none is skipped silently.
	checks := []string{"format", "signature", "root"}
	if *root == "" {
		checks[2] = "root (AWS Nitro, pinned)"
	}
	if *maxAge > 0 {
		checks = append(checks, "max-age")
	}
	if nonce.b != nil {
		checks = append(checks, "nonce")
	}
	for _, i := range slices.Sorted(maps.Keys(pcrs)) {
		checks = append(checks, fmt.Sprintf("pcr%d", i))
	}
	debug := len(d.PCRs[0]) > 0 && !slices.ContainsFunc(d.PCRs[0], func(b byte) bool { return b != 0 })
	if debug && !*allowDebug {
		fmt.Fprintln(stderr, "enclavekit attest verify: FAILED debug mode check: PCR0 is all zeros, so the document comes from a debug-mode enclave, whose memory the parent can read (pass --allow-debug only for a development enclave)")
		return exitFailure
	}
	checks = append(checks, "debug-mode")
	var warnings []string
	if *maxAge == 0 {
		warnings = append(warnings, "no --max-age: freshness not checked (fine for an archived document)")
	}
	if len(pcrs) == 0 {
		warnings = append(warnings, "no --pcr given: any enclave image passes; pass the PCRs of your EIF (enclavekit eif pcrs) to check that it is yours")
	}
	if debug {
		warnings = append(warnings, "debug-mode document accepted with --allow-debug: never trust it with secrets")
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "enclavekit attest verify: WARNING: "+w)
	}
	return attestPrintReport(stdout, stderr, d, true, checks, strings.Join(warnings, "; "))
}

func attestInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit attest inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, attestUsage) }
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "enclavekit attest inspect: want exactly one FILE, got %d\n", len(pos))
		return exitUsage
	}
	doc, err := attestReadDocument(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit attest inspect: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stderr, "WARNING: UNVERIFIED DOCUMENT: the signature, certificate chain and freshness were NOT checked; use \"enclavekit attest verify\" before trusting anything below.")
	d, err := attest.ParseUnverified(doc)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit attest inspect: FAILED %s check: %s\n", attestCheckName(err), attestOneLine(err))
		return exitFailure
	}
	return attestPrintDocument(stdout, stderr, d, false)
}

// attestCheckName names the verification step behind err for the one-line report.
func attestCheckName(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{attest.ErrConfig, "options"},
		{attest.ErrMalformed, "format"},
		{attest.ErrAlgorithm, "algorithm (ES384)"},
		{attest.ErrRootNotPinned, "root pin"},
		{attest.ErrChain, "certificate chain"},
		{attest.ErrLeafKey, "signing key"},
		{attest.ErrSignature, "signature"},
		{attest.ErrStale, "freshness"},
		{attest.ErrNonceMismatch, "nonce"},
		{attest.ErrPCRMismatch, "PCR"},
		{attest.ErrUserDataMismatch, "user_data"},
		{attest.ErrPublicKeyMismatch, "public_key"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "unknown"
}

// attestOneLine flattens err to one printable line. Messages can quote
// names from the untrusted document's certificates, so every character
// that is not printable (terminal escapes, bidi overrides, DEL) becomes '?'.
func attestOneLine(err error) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, strings.Join(strings.Fields(err.Error()), " "))
}

func attestLoadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE blocks", path)
	}
	return pool, nil
}

// attestReadDocument reads raw CBOR, or hex or base64 text of it.
func attestReadDocument(path string) ([]byte, error) {
	data, err := readInput(path, 4*attest.MaxDocumentSize)
	if err != nil {
		return nil, err
	}
	if len(data) > 0 && (data[0] == 0x84 || data[0] == 0xd2) {
		return data, nil
	}
	text := strings.Join(strings.Fields(string(data)), "")
	if b, err := hex.DecodeString(text); err == nil && len(b) > 0 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(text); err == nil && len(b) > 0 {
		return b, nil
	}
	return data, nil // let the verifier report the format error
}

// attestPCRsJSON marshals as a JSON object with numerically ordered keys.
type attestPCRsJSON map[int][]byte

func (p attestPCRsJSON) MarshalJSON() ([]byte, error) {
	keys := make([]int, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", strconv.Itoa(k), hex.EncodeToString(p[k]))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type attestJSONCert struct {
	Subject  string `json:"subject"`
	Issuer   string `json:"issuer"`
	NotAfter string `json:"not_after"`
}

type attestJSON struct {
	Verified    bool           `json:"verified"`
	Checks      []string       `json:"checks,omitempty"`
	Warning     string         `json:"warning,omitempty"`
	ModuleID    string         `json:"module_id"`
	Timestamp   string         `json:"timestamp"`
	Digest      string         `json:"digest"`
	NitroTPM    bool           `json:"nitrotpm,omitempty"`
	PCRs        attestPCRsJSON `json:"pcrs"`
	UserData    []byte         `json:"user_data"`
	Nonce       []byte         `json:"nonce"`
	PublicKey   []byte         `json:"public_key"`
	Certificate attestJSONCert `json:"certificate"`
}

func attestPrintDocument(stdout, stderr io.Writer, d *attest.Document, verified bool) int {
	return attestPrintReport(stdout, stderr, d, verified, nil, "")
}

// attestPrintReport prints d as JSON with the checks that ran and any
// warning.
func attestPrintReport(stdout, stderr io.Writer, d *attest.Document, verified bool, checks []string, warning string) int {
	out := attestJSON{
		Verified:  verified,
		Checks:    checks,
		Warning:   warning,
		ModuleID:  d.ModuleID,
		Timestamp: d.Timestamp.UTC().Format(time.RFC3339Nano),
		Digest:    d.Digest,
		NitroTPM:  d.NitroTPM,
		PCRs:      attestPCRsJSON(d.PCRs),
		UserData:  d.UserData,
		Nonce:     d.Nonce,
		PublicKey: d.PublicKey,
		Certificate: attestJSONCert{
			Subject:  d.Certificate.Subject.String(),
			Issuer:   d.Certificate.Issuer.String(),
			NotAfter: d.Certificate.NotAfter.UTC().Format(time.RFC3339),
		},
	}
	if !verified {
		out.Warning = "UNVERIFIED: signature, certificate chain and freshness NOT checked"
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "enclavekit attest: %v\n", err)
		return exitFailure
	}
	return exitOK
}
