package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/transport"
)

const attestTLSUsage = `usage:
  enclavekit attest tls ADDR [--root FILE.pem] [--pcr N=HEX]... [--fresh] [--max-age DUR] [--allow-debug] [--timeout DUR]

tls connects to an attested TLS endpoint (ADDR is tcp://HOST:PORT or
vsock://CID:PORT), checks that its certificate carries an attestation
document that verifies to the AWS Nitro root (or --root), is at most
--max-age old, has the --pcr values, is not from a debug-mode enclave
(unless --allow-debug) and is for the certificate's own key; with --fresh
it also asks, over the session, for a new document bound to that session.
It prints a JSON report and exits 0, or prints the failed check and exits 1.
`

// attestTLSReport is the JSON printed on success.
type attestTLSReport struct {
	Verified     bool            `json:"verified"`
	Address      string          `json:"address"`
	TLSVersion   string          `json:"tls_version"`
	Root         string          `json:"root"`
	ModuleID     string          `json:"module_id"`
	Timestamp    string          `json:"timestamp"`
	Age          string          `json:"age"`
	PCRs         attestPCRsJSON  `json:"pcrs"`
	PublicKey    string          `json:"public_key_sha256"`
	Fresh        *attestTLSFresh `json:"fresh,omitempty"`
	Checks       []string        `json:"checks"`
	Warning      string          `json:"warning,omitempty"`
	DebugAllowed bool            `json:"debug_allowed,omitempty"`
}

type attestTLSFresh struct {
	Timestamp string `json:"timestamp"`
	Nonce     string `json:"nonce"`
}

func attestTLS(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit attest tls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, attestTLSUsage, "\nflags:\n"); fs.PrintDefaults() }
	root := fs.String("root", "", "PEM `FILE` of trusted root certificates (default: the pinned AWS Nitro root)")
	maxAge := fs.Duration("max-age", attest.DefaultTLSMaxAge, "reject documents older than `DUR`")
	fresh := fs.Bool("fresh", false, "also ask for a document bound to this TLS session (proves the enclave is live and terminates this session)")
	allowDebug := fs.Bool("allow-debug", false, "accept a debug-mode enclave (PCR0 all zeros), for development only")
	timeout := fs.Duration("timeout", 10*time.Second, "`DUR` allowed for connecting, the handshake and --fresh")
	pcrs := attestPCRFlags{}
	fs.Var(pcrs, "pcr", "expected PCR value `N=HEX` (repeatable)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	const name = "enclavekit attest tls"
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want exactly one ADDR (tcp://HOST:PORT or vsock://CID:PORT), got %d\n", name, len(pos))
		return exitUsage
	}
	if *maxAge <= 0 {
		fmt.Fprintf(stderr, "%s: --max-age must be positive (a live endpoint's document is checked for freshness)\n", name)
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "%s: --timeout must be positive\n", name)
		return exitUsage
	}
	addr := pos[0]
	if _, err := transport.ParseAddr(addr); err != nil {
		fmt.Fprintf(stderr, "%s: ADDR %q: %s (want tcp://HOST:PORT or vsock://CID:PORT)\n", name, addr, attestOneLine(err))
		return exitUsage
	}
	opts := attest.TLSOptions{PCRs: pcrs, AnyImage: len(pcrs) == 0, MaxAge: *maxAge, Fresh: *fresh, AllowDebug: *allowDebug}
	rootName := "AWS Nitro Enclaves root (pinned, sha256 " + attest.AWSRootSHA256 + ")"
	if *root != "" {
		pool, err := attestLoadRoots(*root)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --root: %s\n", name, attestOneLine(err))
			return exitFailure
		}
		opts.Roots = pool
		rootName = *root
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	raw, err := transport.Dial(ctx, addr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: FAILED connect: %s\n", name, attestOneLine(err))
		return exitFailure
	}
	c, err := attest.ClientHandshake(ctx, raw, opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: FAILED %s check: %s%s\n", name, attestTLSCheckName(err), attestOneLine(err), attestTLSHint(err))
		return exitFailure
	}
	defer c.Close()
	res := c.Result()
	d := res.Document
	sum := sha256.Sum256(d.PublicKey)
	out := attestTLSReport{
		Verified:     true,
		Address:      addr,
		TLSVersion:   tls.VersionName(c.ConnectionState().Version),
		Root:         rootName,
		ModuleID:     d.ModuleID,
		Timestamp:    d.Timestamp.UTC().Format(time.RFC3339Nano),
		Age:          time.Since(d.Timestamp).Round(time.Millisecond).String(),
		PCRs:         attestPCRsJSON(d.PCRs),
		PublicKey:    hex.EncodeToString(sum[:]),
		Checks:       res.Checks,
		DebugAllowed: *allowDebug,
	}
	if len(pcrs) == 0 {
		out.Warning = "no --pcr given: any enclave image passes; pass the PCRs of your EIF (enclavekit eif pcrs) to check that it is yours"
		fmt.Fprintln(stderr, "enclavekit attest tls: WARNING: "+out.Warning)
	}
	if res.Fresh != nil {
		out.Fresh = &attestTLSFresh{Timestamp: res.Fresh.Timestamp.UTC().Format(time.RFC3339Nano), Nonce: hex.EncodeToString(res.Fresh.Nonce)}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	return exitOK
}

// attestTLSCheckName names the attested TLS check behind err.
func attestTLSCheckName(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{attest.ErrNoAttestation, "attestation extension"},
		{attest.ErrTLSKeyMismatch, "public key binding"},
		{attest.ErrDebugMode, "debug mode"},
		{attest.ErrNotSessionBound, "fresh session binding"},
		{attest.ErrFreshExchange, "fresh exchange"},
		{attest.ErrConfig, "options"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	if n := attestCheckName(err); n != "unknown" {
		return n
	}
	return "TLS handshake"
}

// attestTLSHint says what to do about the failures that have a remedy.
func attestTLSHint(err error) string {
	switch {
	case errors.Is(err, attest.ErrDebugMode):
		return " (pass --allow-debug only for a development enclave)"
	case errors.Is(err, attest.ErrRootNotPinned):
		return " (for a development enclave, pass the file enclaved --emulator-root wrote as --root)"
	case errors.Is(err, attest.ErrStale):
		return " (the enclave renews its document; check both clocks, or raise --max-age)"
	}
	return ""
}
