package attest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Attested TLS: the enclave serves TLS 1.3 with a key generated inside it,
// and its self-signed certificate carries an attestation document whose
// public_key is the certificate's SubjectPublicKeyInfo. The enclave side is
// enclave.NewAttestedListener; this file is the client side and the wire
// format both share. docs/attested-tls.md describes it for other languages.

// ExtensionOID identifies the certificate extension that carries the
// attestation document: 2.999.25963.1 (see ExtensionOIDString). enclavekit
// owns no registered arc yet; 2.999 is the joint ISO/ITU-T "example" arc,
// assigned to no organisation, so the OID can collide with no registered
// extension. It is provisional: a future version may move it under a
// registered private enterprise number and accept both.
var ExtensionOID = asn1.ObjectIdentifier{2, 999, 25963, 1}

// ExtensionOIDString is ExtensionOID in dotted form.
const ExtensionOIDString = "2.999.25963.1"

// ExporterLabel is the RFC 8446 section 7.5 exporter label whose 32-byte
// value (empty context) is the nonce of a Fresh document.
const ExporterLabel = "EXPORTER-enclavekit-attestation"

// ExporterSize is the length of the exporter value used as the nonce.
const ExporterSize = 32

// DefaultTLSMaxAge is TLSOptions.MaxAge when zero: the oldest a document in
// a certificate may be. The enclave renews at half its own bound (10
// minutes by default), so a healthy enclave's document is at most about 5
// minutes old.
const DefaultTLSMaxAge = 10 * time.Minute

// Fresh exchange wire format. After the handshake, the client may send, as
// the very first application bytes of the session, the 9-byte request
//
//	FreshMagic (8 bytes: ff 65 6b 66 72 65 73 68, "\xffekfresh") ‖ version (1 byte, 0x01)
//
// and the enclave answers, before anything else it writes,
//
//	FreshMagic ‖ version 0x01 ‖ status (1 byte) ‖ length (uint32 big-endian) ‖ body
//
// status 0: body is an attestation document (length ≤ MaxDocumentSize)
// whose nonce is the session's exporter value (ExporterLabel, 32 bytes) and
// whose public_key is the certificate's SubjectPublicKeyInfo. status 1:
// body is a short ASCII error message (length ≤ MaxFreshErrorSize) and the
// enclave closes the connection. The session then carries the application
// protocol as usual. No application protocol that enclavekit serves starts
// with byte 0xff (the enclavekit frame length would exceed 64 MiB; HTTP/1
// and HTTP/2 start with ASCII), so the listener tells the two apart by the
// first byte.
var FreshMagic = [8]byte{0xff, 'e', 'k', 'f', 'r', 'e', 's', 'h'}

// Fresh exchange constants.
const (
	FreshVersion = 1
	// FreshStatusOK and FreshStatusError are the response statuses.
	FreshStatusOK    = 0
	FreshStatusError = 1
	// MaxFreshErrorSize bounds an error message in a Fresh response.
	MaxFreshErrorSize = 256
	// freshHeaderSize is magic, version, status and length.
	freshHeaderSize = len(FreshMagic) + 1 + 1 + 4
)

// Sentinel errors of attested TLS. Each names the check that failed; the
// errors of Verify (ErrRootNotPinned, ErrStale, ErrPCRMismatch…) are wrapped
// as they are, so errors.Is finds both.
var (
	// ErrNoAttestation: the peer's certificate carries no attestation
	// extension (ExtensionOID), or an empty or malformed one. A
	// TLS-terminating proxy with an ordinary certificate fails here.
	ErrNoAttestation = errors.New("attest: TLS peer certificate carries no attestation document")

	// ErrTLSKeyMismatch: the document's public_key is not the TLS peer's
	// key (SubjectPublicKeyInfo). A proxy that copies a genuine document
	// into a certificate for its own key fails here.
	ErrTLSKeyMismatch = errors.New("attest: attestation document is for another key than the TLS peer's")

	// ErrDebugMode: the document's PCR0 is all zeros, as in a debug-mode
	// enclave, whose memory the parent can read. Refused unless
	// TLSOptions.AllowDebug.
	ErrDebugMode = errors.New("attest: document is from a debug-mode enclave (PCR0 all zeros)")

	// ErrNotSessionBound: the Fresh document's nonce is not this session's
	// exporter value: it was replayed from another session, or relayed by
	// someone holding a different session with the enclave.
	ErrNotSessionBound = errors.New("attest: fresh document is not bound to this TLS session (replayed or relayed)")

	// ErrFreshExchange: the Fresh exchange itself failed: the peer does not
	// speak it, answered malformed or oversized data, reported an error,
	// or did not answer in time.
	ErrFreshExchange = errors.New("attest: fresh attestation exchange failed")
)

// Checks that a verification runs, in order, as reported by TLSResult.Checks.
const (
	CheckTLS13        = "tls1.3"
	CheckExtension    = "extension"
	CheckDocument     = "document"    // format, ES384 signature, chain to the root
	CheckRoot         = "root"        // the chain ends at a trusted root
	CheckMaxAge       = "max-age"     // the document is at most MaxAge old
	CheckPCRs         = "pcrs"        // every expected PCR matches
	CheckDebugMode    = "debug-mode"  // PCR0 is not all zeros
	CheckPublicKey    = "public-key"  // public_key is the peer's SubjectPublicKeyInfo
	CheckFreshSession = "fresh-nonce" // a new document bound to this session's exporter
)

// TLSOptions configure the client side of attested TLS. PCRs (or AnyImage)
// must be set: a document signed under the AWS root only says that some
// enclave holds the key, and anyone can run an enclave. The rest defaults
// to the pinned AWS root and DefaultTLSMaxAge.
type TLSOptions struct {
	// Roots are the trust anchors of the document's chain. nil pins the
	// AWS Nitro Enclaves root (AWSRootSHA256). Development: the emulator's
	// root (enclaved --emulator-root FILE).
	Roots *x509.CertPool

	// PCRs maps PCR index (0..31) to its expected 48-byte value; each must
	// match. Required unless AnyImage: usually PCR0 (the whole image), or
	// PCR0..2, or PCR8 (the signing certificate) from the EIF build.
	PCRs map[int][]byte

	// AnyImage accepts an enclave running any image: no PCR is checked.
	// For inspecting an endpoint only (enclavekit attest tls without
	// --pcr): whoever runs an enclave of their own passes.
	AnyImage bool

	// MaxAge is the oldest document accepted. 0 means DefaultTLSMaxAge
	// (10m); it must not be negative.
	MaxAge time.Duration

	// AllowDebug accepts documents whose PCR0 is all zeros (debug-mode
	// enclaves). Only for development.
	AllowDebug bool

	// Fresh asks the enclave, after the handshake, for a new document
	// bound to this session (nonce = the TLS exporter value), proving that
	// the enclave holding the key is alive and terminates this very
	// session. Only ClientHandshake and TLSDialer do it; a bare tls.Config
	// from NewTLSConfig cannot.
	Fresh bool

	// ServerName is sent as SNI; "" sends none. It is not verified.
	ServerName string

	// Now returns the verifier's clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o *TLSOptions) Validate() error {
	if o.MaxAge < 0 {
		return fieldErr("TLSOptions.MaxAge", o.MaxAge, "negative (0 means the default, %v)", DefaultTLSMaxAge)
	}
	if err := validatePCRs("TLSOptions.PCRs", o.PCRs); err != nil {
		return err
	}
	if len(o.PCRs) == 0 && !o.AnyImage {
		return fmt.Errorf("%w: TLSOptions.PCRs is empty, no expected PCRs: any enclave image would pass; give the PCRs of your EIF (enclavekit eif pcrs)", ErrConfig)
	}
	return nil
}

func (o *TLSOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *TLSOptions) maxAge() time.Duration {
	if o.MaxAge == 0 {
		return DefaultTLSMaxAge
	}
	return o.MaxAge
}

// TLSResult is what a successful verification established.
type TLSResult struct {
	// Document is the verified document from the peer's certificate.
	Document *Document
	// Fresh is the verified session-bound document (TLSOptions.Fresh), or nil.
	Fresh *Document
	// Checks names the checks that ran and passed, in order (Check*).
	Checks []string
}

// NewTLSConfig returns a client tls.Config that accepts only a TLS 1.3
// peer whose certificate carries a document verifying under opts and
// bound to the certificate's key. Chain verification of the certificate
// itself does not apply (it is self-signed): InsecureSkipVerify is set and
// VerifyConnection does every check. Use it where only a tls.Config fits
// (an http.Transport's TLSClientConfig); ClientHandshake also reports the
// document and runs the Fresh exchange.
func NewTLSConfig(opts TLSOptions) (*tls.Config, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return newTLSConfig(&opts, nil), nil
}

func newTLSConfig(opts *TLSOptions, res *TLSResult) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         opts.ServerName,
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			r, err := verifyConnection(opts, cs)
			if err != nil {
				return err
			}
			if res != nil {
				*res = r
			}
			return nil
		},
	}
}

// verifyConnection runs the checks on a completed handshake, in the order
// docs/attested-tls.md lists them.
func verifyConnection(opts *TLSOptions, cs tls.ConnectionState) (TLSResult, error) {
	var res TLSResult
	if cs.Version != tls.VersionTLS13 {
		return TLSResult{}, fmt.Errorf("attest: attested TLS needs TLS 1.3, the peer negotiated %s", tls.VersionName(cs.Version))
	}
	res.Checks = append(res.Checks, CheckTLS13)
	if len(cs.PeerCertificates) == 0 {
		return TLSResult{}, fmt.Errorf("%w: the peer sent no certificate", ErrNoAttestation)
	}
	leaf := cs.PeerCertificates[0]
	raw, err := DocumentFromCertificate(leaf)
	if err != nil {
		return TLSResult{}, err
	}
	res.Checks = append(res.Checks, CheckExtension)
	d, checks, err := verifyBound(opts, raw, leaf, nil)
	if err != nil {
		return TLSResult{}, fmt.Errorf("attest: the certificate's document: %w", err)
	}
	res.Document = d
	res.Checks = append(res.Checks, checks...)
	return res, nil
}

// verifyBound verifies doc under opts and checks that it is bound to the
// key of leaf (and, when nonce is non-nil, to nonce).
func verifyBound(opts *TLSOptions, doc []byte, leaf *x509.Certificate, nonce []byte) (*Document, []string, error) {
	vo := VerifyOptions{
		Roots:       opts.Roots,
		CurrentTime: opts.now(),
		MaxAge:      opts.maxAge(),
		PCRs:        opts.PCRs,
	}
	d, err := Verify(doc, vo)
	if err != nil {
		return nil, nil, err
	}
	checks := []string{CheckDocument, CheckRoot, CheckMaxAge}
	if len(opts.PCRs) > 0 {
		checks = append(checks, CheckPCRs)
	}
	if !opts.AllowDebug {
		if p0, ok := d.PCRs[0]; !ok || allZero(p0) {
			return nil, nil, ErrDebugMode
		}
		checks = append(checks, CheckDebugMode)
	}
	if d.PublicKey == nil || !bytes.Equal(d.PublicKey, leaf.RawSubjectPublicKeyInfo) {
		return nil, nil, fmt.Errorf("%w (document public_key is %d bytes, the certificate's key %d)", ErrTLSKeyMismatch, len(d.PublicKey), len(leaf.RawSubjectPublicKeyInfo))
	}
	checks = append(checks, CheckPublicKey)
	if nonce != nil {
		if d.Nonce == nil || !bytes.Equal(d.Nonce, nonce) {
			return nil, nil, fmt.Errorf("%w: %w", ErrNotSessionBound, ErrNonceMismatch)
		}
		checks = append(checks, CheckFreshSession)
	}
	return d, checks, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// DocumentFromCertificate returns the attestation document carried in c's
// ExtensionOID extension, without verifying it. It fails with
// ErrNoAttestation when the extension is absent, repeated, critical,
// empty, oversized or not a DER OCTET STRING.
func DocumentFromCertificate(c *x509.Certificate) ([]byte, error) {
	var found []byte
	n := 0
	for _, e := range c.Extensions {
		if !e.Id.Equal(ExtensionOID) {
			continue
		}
		n++
		if e.Critical {
			return nil, fmt.Errorf("%w: the extension %s is marked critical", ErrNoAttestation, ExtensionOIDString)
		}
		found = e.Value
	}
	switch n {
	case 0:
		return nil, fmt.Errorf("%w: no extension %s", ErrNoAttestation, ExtensionOIDString)
	case 1:
	default:
		return nil, fmt.Errorf("%w: the extension %s appears %d times", ErrNoAttestation, ExtensionOIDString, n)
	}
	return ParseExtensionValue(found)
}

// ParseExtensionValue decodes the extension's value: a DER OCTET STRING
// holding the document, with nothing after it. The returned slice aliases
// v.
func ParseExtensionValue(v []byte) ([]byte, error) {
	if len(v) < 2 || v[0] != 0x04 {
		return nil, fmt.Errorf("%w: the extension value is not a DER OCTET STRING", ErrNoAttestation)
	}
	n, hdr := 0, 2
	switch l := v[1]; {
	case l < 0x80:
		n = int(l)
	case l == 0x81:
		if len(v) < 3 || v[2] < 0x80 {
			return nil, fmt.Errorf("%w: the extension value's length is not minimal DER", ErrNoAttestation)
		}
		n, hdr = int(v[2]), 3
	case l == 0x82:
		if len(v) < 4 || v[2] == 0 {
			return nil, fmt.Errorf("%w: the extension value's length is not minimal DER", ErrNoAttestation)
		}
		n, hdr = int(binary.BigEndian.Uint16(v[2:4])), 4
	case l == 0x83:
		if len(v) < 5 || v[2] == 0 {
			return nil, fmt.Errorf("%w: the extension value's length is not minimal DER", ErrNoAttestation)
		}
		n, hdr = int(v[2])<<16|int(v[3])<<8|int(v[4]), 5
	default:
		return nil, fmt.Errorf("%w: the extension value's length is unsupported", ErrNoAttestation)
	}
	if n > MaxDocumentSize {
		return nil, fmt.Errorf("%w: the document is %d bytes, limit %d", ErrNoAttestation, n, MaxDocumentSize)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the extension is empty", ErrNoAttestation)
	}
	if len(v)-hdr != n {
		return nil, fmt.Errorf("%w: the extension value declares %d bytes and holds %d", ErrNoAttestation, n, len(v)-hdr)
	}
	return v[hdr:], nil
}

// MarshalExtensionValue encodes doc as the extension's value (a DER OCTET
// STRING); see ParseExtensionValue.
func MarshalExtensionValue(doc []byte) ([]byte, error) {
	if len(doc) == 0 || len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("attest: document of %d bytes does not fit the extension (1..%d)", len(doc), MaxDocumentSize)
	}
	return asn1.Marshal(doc)
}

// FreshRequest returns the 9-byte Fresh request.
func FreshRequest() []byte {
	return append(FreshMagic[:len(FreshMagic):len(FreshMagic)], FreshVersion)
}

// AppendFreshResponse appends a Fresh response with status and body to b.
// It panics if body is larger than the status allows (a programming error).
func AppendFreshResponse(b []byte, status byte, body []byte) []byte {
	limit := MaxDocumentSize
	if status != FreshStatusOK {
		limit = MaxFreshErrorSize
	}
	if len(body) > limit {
		panic(fmt.Sprintf("attest: Fresh response body of %d bytes, limit %d", len(body), limit))
	}
	b = append(b, FreshMagic[:]...)
	b = append(b, FreshVersion, status)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// ReadFreshResponse reads one Fresh response from r and returns the
// document it carries. The length is checked before anything is
// allocated; an error status, a wrong magic or version, a short read and
// an oversized body all fail with ErrFreshExchange.
func ReadFreshResponse(r io.Reader) ([]byte, error) {
	var hdr [freshHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: reading the response header: %w", ErrFreshExchange, err)
	}
	if !bytes.Equal(hdr[:len(FreshMagic)], FreshMagic[:]) {
		return nil, fmt.Errorf("%w: the peer does not speak it (no response magic)", ErrFreshExchange)
	}
	if v := hdr[len(FreshMagic)]; v != FreshVersion {
		return nil, fmt.Errorf("%w: response version %d, want %d", ErrFreshExchange, v, FreshVersion)
	}
	status := hdr[len(FreshMagic)+1]
	n := binary.BigEndian.Uint32(hdr[len(FreshMagic)+2:])
	switch status {
	case FreshStatusOK:
		if n == 0 || n > MaxDocumentSize {
			return nil, fmt.Errorf("%w: document length %d, want 1..%d", ErrFreshExchange, n, MaxDocumentSize)
		}
	case FreshStatusError:
		if n > MaxFreshErrorSize {
			return nil, fmt.Errorf("%w: error message length %d, limit %d", ErrFreshExchange, n, MaxFreshErrorSize)
		}
	default:
		return nil, fmt.Errorf("%w: unknown response status %d", ErrFreshExchange, status)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: reading the %d-byte response body: %w", ErrFreshExchange, n, err)
	}
	if status == FreshStatusError {
		return nil, fmt.Errorf("%w: the enclave answered: %q", ErrFreshExchange, body)
	}
	return body, nil
}

// TLSConn is a verified attested TLS connection.
type TLSConn struct {
	*tls.Conn
	res TLSResult
}

// Result returns what the verification established.
func (c *TLSConn) Result() TLSResult { return c.res }

// ClientHandshake runs a TLS 1.3 handshake over raw, verifies the peer as
// NewTLSConfig does and, with opts.Fresh, runs the Fresh exchange and
// verifies the session-bound document. ctx bounds all of it. On error raw
// is closed.
func ClientHandshake(ctx context.Context, raw net.Conn, opts TLSOptions) (*TLSConn, error) {
	if err := opts.Validate(); err != nil {
		raw.Close()
		return nil, err
	}
	var res TLSResult
	tc := tls.Client(raw, newTLSConfig(&opts, &res))
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, err
	}
	if opts.Fresh {
		d, err := freshExchange(ctx, tc, &opts)
		if err != nil {
			tc.Close()
			return nil, err
		}
		res.Fresh = d
		res.Checks = append(res.Checks, CheckFreshSession)
	}
	return &TLSConn{Conn: tc, res: res}, nil
}

// freshExchange asks for a document bound to tc's session and verifies it.
func freshExchange(ctx context.Context, tc *tls.Conn, opts *TLSOptions) (*Document, error) {
	cs := tc.ConnectionState()
	nonce, err := cs.ExportKeyingMaterial(ExporterLabel, nil, ExporterSize)
	if err != nil {
		return nil, fmt.Errorf("%w: exporter: %w", ErrFreshExchange, err)
	}
	if d, ok := ctx.Deadline(); ok {
		tc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { tc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		tc.SetDeadline(time.Time{})
	}()
	if _, err := tc.Write(FreshRequest()); err != nil {
		return nil, fmt.Errorf("%w: sending the request: %w", ErrFreshExchange, err)
	}
	doc, err := ReadFreshResponse(tc)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, err
	}
	d, _, err := verifyBound(opts, doc, cs.PeerCertificates[0], nonce)
	if err != nil {
		return nil, fmt.Errorf("attest: the fresh document: %w", err)
	}
	return d, nil
}

// TLSDialer dials attested TLS connections; its DialContext fits
// http.Transport.DialTLSContext.
type TLSDialer struct {
	// Options configure the verification (and Fresh).
	Options TLSOptions
	// Dial opens the underlying connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext connects to addr and returns a verified *TLSConn.
func (d *TLSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c, err := ClientHandshake(ctx, raw, d.Options)
	if err != nil {
		return nil, err
	}
	return c, nil
}
