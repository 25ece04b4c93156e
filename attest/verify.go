package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// MaxClockSkew is how far in the future (relative to the verifier's clock)
// a document's timestamp may be when freshness is checked.
const MaxClockSkew = time.Minute

// VerifyOptions configures Verify. The zero value verifies the signature and
// the chain to the pinned AWS Nitro root at the document's own timestamp and
// checks nothing else: add freshness and expected values for a live
// handshake.
type VerifyOptions struct {
	// Roots are the trust anchors; cabundle[0] of the document must be one
	// of them. Nil pins the AWS Nitro Enclaves root (AWSRootSHA256). Tests
	// pass the emulator's roots (nsmtest.Emulator.Roots).
	Roots *x509.CertPool

	// CurrentTime is the verifier's clock for the freshness checks. Zero
	// means time.Now() when MaxAge is set, and no freshness check at all
	// when MaxAge is zero. When set, the document must not be dated more
	// than MaxClockSkew after it and the signing certificate must still be
	// valid at it. The chain itself is always verified at the document's
	// timestamp. It is an instant, not a clock (as in
	// crypto/x509.VerifyOptions): one Verify checks at one time. The
	// options that outlive one check (TLSOptions, parent.AttestOptions)
	// take a Now func instead.
	CurrentTime time.Time

	// MaxAge, when positive, rejects documents older than MaxAge at
	// CurrentTime (ErrStale). Zero skips freshness, for archived documents.
	MaxAge time.Duration

	// Nonce, when non-nil, must equal the document's nonce (compared in
	// constant time). An empty non-nil Nonce requires an absent nonce.
	Nonce []byte

	// PCRs maps PCR index (0..31) to its expected 48-byte value; every entry
	// must be present and equal in the document.
	PCRs map[int][]byte

	// NitroTPM says that PCRs are expected NitroTPM values (an EC2
	// NitroTPM document's nitrotpm_pcrs) rather than Nitro Enclave PCRs.
	// When PCRs is non-empty, a document of the other kind fails with
	// ErrPCRMismatch.
	NitroTPM bool

	// UserData and PublicKey, when non-nil, must equal the document's fields.
	UserData  []byte
	PublicKey []byte

	// ChainCache caches verified cabundle chains, so that documents from
	// the same host skip re-verifying the intermediates. Nil uses a shared
	// package-level cache; see DisableChainCache.
	ChainCache *ChainCache

	// DisableChainCache verifies every chain from scratch.
	DisableChainCache bool
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o *VerifyOptions) Validate() error {
	if o.MaxAge < 0 {
		return fieldErr("VerifyOptions.MaxAge", o.MaxAge, "negative (0 skips the freshness check)")
	}
	if err := validatePCRs("VerifyOptions.PCRs", o.PCRs); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"VerifyOptions.Nonce", o.Nonce}, {"VerifyOptions.UserData", o.UserData}, {"VerifyOptions.PublicKey", o.PublicKey}} {
		if len(f.b) > MaxFieldSize {
			return fieldErr(f.name, fmt.Sprintf("%d bytes", len(f.b)), "above MaxFieldSize (%d bytes)", MaxFieldSize)
		}
	}
	return nil
}

// validatePCRs checks expected PCRs: indices 0..MaxPCRs-1, values of
// PCRSize bytes.
func validatePCRs(field string, pcrs map[int][]byte) error {
	for i, v := range pcrs {
		if i < 0 || i >= MaxPCRs {
			return fieldErr(field+" index", i, "outside 0..%d", MaxPCRs-1)
		}
		if len(v) != PCRSize {
			return fieldErr(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%d bytes", len(v)), "not %d (a SHA-384 PCR value)", PCRSize)
		}
	}
	return nil
}

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "attest: bad configuration: TLSOptions.MaxAge
// is -1s, negative (0 means the default, 10m0s)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}

// Verify parses and verifies an attestation document: strict CBOR, the
// COSE_Sign1 ES384 envelope, the payload fields, the certificate chain from
// the cabundle to a pinned root at the document's timestamp, the signature,
// then freshness and the expected values set in opts. It returns the
// document or an error wrapping one of the Err* sentinels, never both.
func Verify(doc []byte, opts VerifyOptions) (d *Document, err error) {
	// Defense in depth: a panic in a decoder must reject the document, not
	// crash a server. The fuzz tests fail on this message.
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("%w: verifier panic: %v", ErrMalformed, r)
		}
	}()
	d, err = verify(doc, &opts)
	if err != nil {
		return nil, err
	}
	return d, nil
}

func verify(doc []byte, opts *VerifyOptions) (*Document, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	roots := opts.Roots
	if roots == nil {
		roots = awsRootPool
	}
	cache := opts.ChainCache
	if cache == nil {
		cache = defaultChainCache
	}
	if opts.DisableChainCache {
		cache = nil
	}
	var src certSource
	lk := &cacheLookup{cache: cache, roots: roots}
	if cache != nil {
		src = lk
	}
	p, err := parse(doc, src)
	if err != nil {
		return nil, err
	}
	d := p.doc
	pub, err := leafKey(d.Certificate)
	if err != nil {
		return nil, err
	}
	if err := verifyChain(d, opts, lk); err != nil {
		return nil, err
	}
	if err := verifySignature(pub, p); err != nil {
		return nil, err
	}
	if err := checkFreshness(d, opts); err != nil {
		return nil, err
	}
	if err := checkExpected(d, opts); err != nil {
		return nil, err
	}
	return d, nil
}

func leafKey(c *x509.Certificate) (*ecdsa.PublicKey, error) {
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key type %T (%v)", ErrLeafKey, c.PublicKey, c.PublicKeyAlgorithm)
	}
	if pub.Curve != elliptic.P384() {
		return nil, fmt.Errorf("%w: curve %s", ErrLeafKey, pub.Curve.Params().Name)
	}
	return pub, nil
}

func verifyChain(d *Document, opts *VerifyOptions, lk *cacheLookup) error {
	roots, cache := lk.roots, lk.cache
	if opts.Roots == nil {
		// The default trust anchor is pinned by its exact DER bytes.
		if !awsRoot.Equal(d.CABundle[0]) {
			return fmt.Errorf("%w: cabundle[0] (%q) is not the AWS Nitro root", ErrRootNotPinned, d.CABundle[0].Subject.String())
		}
	}
	var key cacheKey
	if cache != nil {
		key = lk.key(d.CABundle)
		if e := lk.entry(key); e != nil {
			return verifyLeafCached(d, e, cache, lk.leafHash(d.Certificate))
		}
	}

	inter := x509.NewCertPool()
	for _, c := range d.CABundle[1:] {
		inter.AddCert(c)
	}
	chains, err := d.Certificate.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   d.Timestamp,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) && !inPool(roots, d.CABundle[0], d.Timestamp) {
			return fmt.Errorf("%w: cabundle[0] (%q) is not among the trusted roots", ErrRootNotPinned, d.CABundle[0].Subject.String())
		}
		return fmt.Errorf("%w: at %s: %v", ErrChain, d.Timestamp.Format(time.RFC3339), err)
	}
	// The chain must be anchored at the document's own root, cabundle[0],
	// and be exactly root → cabundle[1] → … → cabundle[n-1] → certificate:
	// the NSM sends its chain in order, and a cabundle with certificates
	// out of order, repeated or unused is not what it signs. (x509.Verify
	// alone treats cabundle[1:] as an unordered pool and would accept it.)
	anchored, linear := false, false
	for _, ch := range chains {
		if ch[len(ch)-1].Equal(d.CABundle[0]) {
			anchored = true
			linear = linear || isLinear(ch, d.CABundle)
		}
	}
	if !anchored {
		return fmt.Errorf("%w: chain does not end at cabundle[0] (%q)", ErrRootNotPinned, d.CABundle[0].Subject.String())
	}
	if !linear {
		return fmt.Errorf("%w: cabundle is not the chain root → intermediates → certificate in order, each used once", ErrChain)
	}
	// The whole cabundle was verified in order, so a later leaf checked
	// against the last cabundle certificate alone is checked against a
	// certificate that was itself verified. The leaf's own link was just
	// checked too, so the entry starts out knowing it: the host's next
	// documents, signed by the same leaf, verify no certificate at all.
	if cache != nil && cacheable(d.CABundle) {
		e := newCacheEntry(roots, d.CABundle)
		e.leaves = map[cacheKey]*x509.Certificate{lk.leafHash(d.Certificate): d.Certificate}
		cache.put(key, e)
	}
	return nil
}

// isLinear reports whether chain is [leaf, bundle[n-1], …, bundle[0]].
func isLinear(chain, bundle []*x509.Certificate) bool {
	if len(chain) != len(bundle)+1 {
		return false
	}
	for i, c := range bundle {
		if !chain[len(bundle)-i].Equal(c) {
			return false
		}
	}
	return true
}

// inPool reports whether c itself is one of roots.
func inPool(roots *x509.CertPool, c *x509.Certificate, at time.Time) bool {
	chains, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil && len(chains) > 0 && len(chains[0]) == 1
}

// verifyLeafCached checks the leaf against a cabundle whose chain to the
// root was verified earlier: the checks x509.Verify applies to the last link.
func verifyLeafCached(d *Document, e *cacheEntry, cache *ChainCache, h cacheKey) error {
	leaf, parent := d.Certificate, e.certs[len(e.certs)-1]
	t := d.Timestamp
	switch {
	case t.Before(e.notBefore) || t.After(e.notAfter):
		return fmt.Errorf("%w: cabundle not valid at %s", ErrChain, t.Format(time.RFC3339))
	case t.Before(leaf.NotBefore) || t.After(leaf.NotAfter):
		return fmt.Errorf("%w: certificate not valid at %s (valid %s to %s)", ErrChain, t.Format(time.RFC3339),
			leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	case len(leaf.UnhandledCriticalExtensions) > 0:
		return fmt.Errorf("%w: certificate has unhandled critical extensions", ErrChain)
	case string(leaf.RawIssuer) != string(parent.RawSubject):
		return fmt.Errorf("%w: certificate issuer does not match the last cabundle subject", ErrChain)
	}
	if cache.leafKnown(e, h, leaf) {
		return nil
	}
	if err := leaf.CheckSignatureFrom(parent); err != nil {
		return fmt.Errorf("%w: certificate: %v", ErrChain, err)
	}
	cache.addLeaf(e, h, leaf)
	return nil
}

// verifySignature checks the ES384 signature over the COSE Sig_structure
// (RFC 8152 section 4.4): ["Signature1", protected, external_aad = h”,
// payload], with protected and payload exactly as received.
func verifySignature(pub *ecdsa.PublicKey, p *parsed) error {
	h := sha512.New384()
	h.Write([]byte{0x84, 0x6a})
	h.Write([]byte("Signature1"))
	writeBstr(h, p.protected)
	h.Write([]byte{0x40})
	writeBstr(h, p.payload)
	var digest [sha512.Size384]byte
	var der [maxSigDER]byte
	if !ecdsa.VerifyASN1(pub, h.Sum(digest[:0]), sigDER(der[:0], p.signature)) {
		return fmt.Errorf("%w: ES384 signature does not verify with the signing certificate's key", ErrSignature)
	}
	return nil
}

// maxSigDER bounds sigDER's output: two 49-byte INTEGERs (48 bytes and a
// sign byte) with their 2-byte headers, in a SEQUENCE with a 2-byte header.
const maxSigDER = 2 + 2*(2+sigSize/2+1)

// sigDER appends the ASN.1 DER form crypto/ecdsa.VerifyASN1 takes,
// SEQUENCE { r INTEGER, s INTEGER }, of a COSE r||s signature (RFC 8152
// section 8.1): the encoding ecdsa.Verify builds from big.Ints, without
// them.
func sigDER(dst, rs []byte) []byte {
	r, s := minimal(rs[:len(rs)/2]), minimal(rs[len(rs)/2:])
	dst = append(dst, 0x30, byte(derUintLen(r)+derUintLen(s)))
	return appendDERUint(appendDERUint(dst, r), s)
}

// minimal strips the leading zero bytes of an unsigned big-endian number,
// keeping one byte for zero.
func minimal(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// derUintLen is the length of the DER INTEGER encoding of the minimal
// non-empty unsigned b (at most 124 bytes), header included.
func derUintLen(b []byte) int {
	if b[0]&0x80 != 0 {
		return 3 + len(b) // a zero byte keeps the INTEGER positive
	}
	return 2 + len(b)
}

func appendDERUint(dst, b []byte) []byte {
	if b[0]&0x80 != 0 {
		return append(append(dst, 0x02, byte(len(b)+1), 0), b...)
	}
	return append(append(dst, 0x02, byte(len(b))), b...)
}

// writeBstr writes a CBOR byte string with the shortest head (RFC 8949
// section 3.1), as COSE requires for the Sig_structure.
func writeBstr(h hash.Hash, b []byte) {
	n := uint64(len(b))
	switch {
	case n < 24:
		h.Write([]byte{0x40 | byte(n)})
	case n <= 0xff:
		h.Write([]byte{0x58, byte(n)})
	case n <= 0xffff:
		h.Write([]byte{0x59, byte(n >> 8), byte(n)})
	case n <= 0xffffffff:
		h.Write([]byte{0x5a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	default:
		h.Write([]byte{0x5b, byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	h.Write(b)
}

func checkFreshness(d *Document, opts *VerifyOptions) error {
	now := opts.CurrentTime
	if now.IsZero() {
		if opts.MaxAge == 0 {
			return nil
		}
		now = time.Now()
	}
	if d.Timestamp.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("%w: dated %s, in the future of %s", ErrStale, d.Timestamp.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(d.Certificate.NotAfter) {
		return fmt.Errorf("%w: signing certificate expired at %s", ErrStale, d.Certificate.NotAfter.Format(time.RFC3339))
	}
	if opts.MaxAge > 0 {
		if age := now.Sub(d.Timestamp); age > opts.MaxAge {
			return fmt.Errorf("%w: document is %s old, max age %s", ErrStale, age.Round(time.Millisecond), opts.MaxAge)
		}
	}
	return nil
}

func checkExpected(d *Document, opts *VerifyOptions) error {
	if opts.Nonce != nil && !protocol.Equal(opts.Nonce, d.Nonce) {
		return ErrNonceMismatch
	}
	// An EC2 NitroTPM document is signed under the same AWS root, and its
	// resettable PCRs (16, 23) can be set by the instance's OS: enclave
	// PCR expectations must never be met by nitrotpm_pcrs, nor the reverse.
	if len(opts.PCRs) > 0 && d.NitroTPM != opts.NitroTPM {
		if d.NitroTPM {
			return fmt.Errorf("%w: document carries NitroTPM PCRs (nitrotpm_pcrs), not Nitro Enclave PCRs", ErrPCRMismatch)
		}
		return fmt.Errorf("%w: document carries Nitro Enclave PCRs, NitroTPM PCRs expected", ErrPCRMismatch)
	}
	for i, want := range opts.PCRs {
		got, ok := d.PCRs[i]
		if !ok {
			return fmt.Errorf("%w: PCR%d absent from the document", ErrPCRMismatch, i)
		}
		if !protocol.Equal(want, got) {
			return fmt.Errorf("%w: PCR%d", ErrPCRMismatch, i)
		}
	}
	if opts.UserData != nil && !protocol.Equal(opts.UserData, d.UserData) {
		return ErrUserDataMismatch
	}
	if opts.PublicKey != nil && !protocol.Equal(opts.PublicKey, d.PublicKey) {
		return ErrPublicKeyMismatch
	}
	return nil
}
