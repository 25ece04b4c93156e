package attest

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Limits applied to untrusted documents. They are far above what the NSM
// produces (a document with three 1024-byte fields and 32 PCRs is under
// 12 KiB) and far below what could hurt a verifier.
const (
	// MaxDocumentSize is the largest document Verify accepts.
	MaxDocumentSize = 64 << 10
	// MaxFieldSize is the NSM limit on user_data, nonce and public_key.
	MaxFieldSize = 1024
	// MaxPCRs is the number of PCRs an NSM exposes (indices 0..31).
	MaxPCRs = 32
	// PCRSize is the length of a SHA-384 PCR value.
	PCRSize = 48

	maxModuleIDLen = 256
	maxCertSize    = 8 << 10
	maxCABundle    = 16
	sigSize        = 96 // ES384 signature r||s, RFC 8152 section 8.1
)

// Document is a parsed attestation document. Verify returns one only after
// every check passed; ParseUnverified returns one whose contents are NOT
// authenticated.
//
// The payload format is the AttestationDoc of aws-nitro-enclaves-nsm-api
// (src/api/mod.rs) and the AWS Nitro Enclaves user guide ("Attestation
// document specification"); NitroTPM documents carry nitrotpm_pcrs instead
// of pcrs (Amazon EC2 user guide, "NitroTPM Attestation Document contents").
type Document struct {
	// ModuleID identifies the issuing NSM, e.g. "i-0809…-enc017cc…".
	ModuleID string
	// Digest names the PCR hash; always "SHA384".
	Digest string
	// Timestamp is when the NSM produced the document (millisecond precision, UTC).
	Timestamp time.Time
	// PCRs maps PCR index (0..31) to its 48-byte value. For a NitroTPM
	// document it holds the nitrotpm_pcrs map.
	PCRs map[int][]byte
	// NitroTPM reports that the document carried nitrotpm_pcrs (an EC2
	// NitroTPM document) rather than pcrs (a Nitro Enclave document).
	NitroTPM bool
	// Certificate is the signing (leaf) certificate. Certificates of a
	// Document may be shared with other Documents verified through the same
	// ChainCache (and the pinned root with the package): treat them as
	// read-only.
	Certificate *x509.Certificate
	// CABundle is the issuing chain, root first: [root, intermediate…].
	CABundle []*x509.Certificate
	// PublicKey, UserData and Nonce are the optional caller-supplied fields;
	// nil when absent or null.
	PublicKey []byte
	UserData  []byte
	Nonce     []byte
}

// coseSign1 is an untagged COSE_Sign1 (RFC 8152 section 4.2):
// [protected: bstr, unprotected: map, payload: bstr, signature: bstr].
type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected cbor.RawMessage
	Payload     []byte
	Signature   []byte
}

// rawPayload holds the payload map's values undecoded so that each can be
// type-checked; unknown keys are rejected by the decoder.
type rawPayload struct {
	ModuleID     cbor.RawMessage `cbor:"module_id"`
	Digest       cbor.RawMessage `cbor:"digest"`
	Timestamp    cbor.RawMessage `cbor:"timestamp"`
	PCRs         cbor.RawMessage `cbor:"pcrs"`
	NitroTPMPCRs cbor.RawMessage `cbor:"nitrotpm_pcrs"`
	Certificate  cbor.RawMessage `cbor:"certificate"`
	CABundle     cbor.RawMessage `cbor:"cabundle"`
	PublicKey    cbor.RawMessage `cbor:"public_key"`
	UserData     cbor.RawMessage `cbor:"user_data"`
	Nonce        cbor.RawMessage `cbor:"nonce"`
}

// coseTag is the CBOR tag of COSE_Sign1 (RFC 8152 section 2), encoded in one byte.
const coseTag18 = 0xd2

// es384Header is the canonical protected header {1: -35}: alg ES384
// (RFC 8152 section 8.1, table 5). Every NSM document carries these bytes.
var es384Header = []byte{0xa1, 0x01, 0x38, 0x22}

var (
	// envMode decodes the COSE envelope and protected header: definite
	// lengths only, no tags, duplicate keys rejected.
	envMode = mustDecMode(cbor.IndefLengthForbidden)
	// payloadMode decodes the payload: like envMode but indefinite-length
	// items are allowed, since 2025+ NSMs emit an indefinite-length map.
	payloadMode = mustDecMode(cbor.IndefLengthAllowed)
)

func mustDecMode(indef cbor.IndefLengthMode) cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       indef,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  64,
		MaxMapPairs:       64,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

// parsed is a decoded, field-checked document plus what signature
// verification needs.
type parsed struct {
	doc       *Document
	protected []byte
	payload   []byte
	signature []byte
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
}

// ParseUnverified decodes an attestation document and checks its shape
// without verifying the signature or the certificate chain: NOTHING in the
// result is authenticated. Use it only to display a document; use Verify to
// trust one.
func ParseUnverified(doc []byte) (d *Document, err error) {
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("%w: parser panic: %v", ErrMalformed, r)
		}
	}()
	p, err := parse(doc, nil)
	if err != nil {
		return nil, err
	}
	return p.doc, nil
}

// certSource supplies already-parsed certificates for DER bytes seen before,
// so that a verifier with a warm ChainCache parses neither the cabundle nor a
// known leaf again. A nil certSource parses everything.
type certSource interface {
	// bundle returns the parsed cabundle for exactly these DERs, or nil.
	bundle(ders [][]byte) []*x509.Certificate
	// leaf returns the parsed signing certificate for exactly der, or nil;
	// it is asked after bundle.
	leaf(der []byte) *x509.Certificate
}

func parse(doc []byte, src certSource) (*parsed, error) {
	if len(doc) == 0 {
		return nil, malformed("empty document")
	}
	if len(doc) > MaxDocumentSize {
		return nil, malformed("document is %d bytes, limit %d", len(doc), MaxDocumentSize)
	}
	// Accept the untagged form the NSM emits and the tag-18 form of
	// RFC 8152; any other tag is rejected by the decoder.
	if doc[0] == coseTag18 {
		doc = doc[1:]
	}
	var msg coseSign1
	if err := envMode.Unmarshal(doc, &msg); err != nil {
		return nil, malformed("COSE_Sign1: %v", err)
	}
	if err := checkProtected(msg.Protected); err != nil {
		return nil, err
	}
	// The NSM sends an empty unprotected header. Anything in it would be
	// unauthenticated (a kid, an x5chain, a second alg) and could steer a
	// less careful consumer of the same bytes, so it must be exactly {}.
	if !bytes.Equal(msg.Unprotected, []byte{0xa0}) {
		return nil, malformed("COSE_Sign1: unprotected header must be an empty map")
	}
	if len(msg.Payload) == 0 {
		return nil, malformed("COSE_Sign1: payload is empty or nil")
	}
	if len(msg.Signature) != sigSize {
		return nil, malformed("COSE_Sign1: signature is %d bytes, want %d", len(msg.Signature), sigSize)
	}
	d, err := parsePayload(msg.Payload, src)
	if err != nil {
		return nil, err
	}
	return &parsed{doc: d, protected: msg.Protected, payload: msg.Payload, signature: msg.Signature}, nil
}

func checkProtected(prot []byte) error {
	if bytes.Equal(prot, es384Header) {
		return nil
	}
	// A non-canonical encoding of {1: -35} alone is still ES384.
	var hdr map[int64]cbor.RawMessage
	if err := envMode.Unmarshal(prot, &hdr); err != nil {
		return fmt.Errorf("%w: protected header: %v", ErrAlgorithm, err)
	}
	var alg int64
	if len(hdr) != 1 || hdr[1] == nil || envMode.Unmarshal(hdr[1], &alg) != nil || alg != -35 {
		return fmt.Errorf("%w: protected header must be exactly {1: -35}", ErrAlgorithm)
	}
	return nil
}

func isNull(raw cbor.RawMessage) bool { return len(raw) == 1 && raw[0] == 0xf6 }

func parsePayload(payload []byte, src certSource) (*Document, error) {
	var rp rawPayload
	if err := payloadMode.Unmarshal(payload, &rp); err != nil {
		return nil, malformed("payload: %v", err)
	}
	d := &Document{}

	// module_id: non-empty text.
	if rp.ModuleID == nil || payloadMode.Unmarshal(rp.ModuleID, &d.ModuleID) != nil {
		return nil, malformed("module_id missing or not a text string")
	}
	if d.ModuleID == "" || len(d.ModuleID) > maxModuleIDLen {
		return nil, malformed("module_id is %d bytes, want 1..%d", len(d.ModuleID), maxModuleIDLen)
	}

	// digest: "SHA384" (the NSM's only PCR bank).
	if rp.Digest == nil || payloadMode.Unmarshal(rp.Digest, &d.Digest) != nil {
		return nil, malformed("digest missing or not a text string")
	}
	if d.Digest != "SHA384" {
		return nil, malformed("digest is %q, want \"SHA384\"", d.Digest)
	}

	// timestamp: milliseconds since the Unix epoch, > 0, before year 10000.
	var ts uint64
	if rp.Timestamp == nil || payloadMode.Unmarshal(rp.Timestamp, &ts) != nil {
		return nil, malformed("timestamp missing or not an unsigned integer")
	}
	const maxTS = 253402300799999 // 9999-12-31T23:59:59.999Z
	if ts == 0 || ts > maxTS {
		return nil, malformed("timestamp %d out of range", ts)
	}
	d.Timestamp = time.UnixMilli(int64(ts)).UTC()

	// pcrs or nitrotpm_pcrs: exactly one.
	rawPCRs, name := rp.PCRs, "pcrs"
	switch {
	case rp.PCRs != nil && rp.NitroTPMPCRs != nil:
		return nil, malformed("both pcrs and nitrotpm_pcrs present")
	case rp.NitroTPMPCRs != nil:
		rawPCRs, name, d.NitroTPM = rp.NitroTPMPCRs, "nitrotpm_pcrs", true
	case rp.PCRs == nil:
		return nil, malformed("pcrs missing")
	}
	pcrs, err := parsePCRs(rawPCRs, name)
	if err != nil {
		return nil, err
	}
	d.PCRs = pcrs

	// certificate and cabundle: DER certificates.
	var certDER []byte
	if rp.Certificate == nil || isNull(rp.Certificate) || payloadMode.Unmarshal(rp.Certificate, &certDER) != nil {
		return nil, malformed("certificate missing or not a byte string")
	}
	if len(certDER) == 0 || len(certDER) > maxCertSize {
		return nil, malformed("certificate is %d bytes, want 1..%d", len(certDER), maxCertSize)
	}
	var bundle [][]byte
	if rp.CABundle == nil || isNull(rp.CABundle) || payloadMode.Unmarshal(rp.CABundle, &bundle) != nil {
		return nil, malformed("cabundle missing or not an array of byte strings")
	}
	if len(bundle) == 0 || len(bundle) > maxCABundle {
		return nil, malformed("cabundle has %d certificates, want 1..%d", len(bundle), maxCABundle)
	}
	for i, der := range bundle {
		if len(der) == 0 || len(der) > maxCertSize {
			return nil, malformed("cabundle[%d] is %d bytes, want 1..%d", i, len(der), maxCertSize)
		}
	}
	if src != nil {
		d.CABundle = src.bundle(bundle)
		d.Certificate = src.leaf(certDER)
	}
	if d.Certificate == nil {
		if d.Certificate, err = x509.ParseCertificate(certDER); err != nil {
			return nil, malformed("certificate: %v", err)
		}
	}
	if d.CABundle == nil {
		d.CABundle = make([]*x509.Certificate, len(bundle))
		for i, der := range bundle {
			// The pinned root is parsed once, at init: every AWS document
			// starts its cabundle with exactly these bytes.
			if i == 0 && bytes.Equal(der, awsRoot.Raw) {
				d.CABundle[0] = awsRoot
				continue
			}
			if d.CABundle[i], err = x509.ParseCertificate(der); err != nil {
				return nil, malformed("cabundle[%d]: %v", i, err)
			}
		}
	}

	// Optional caller fields: absent, null, or a byte string ≤ 1024 bytes.
	for _, f := range []struct {
		name string
		raw  cbor.RawMessage
		dst  *[]byte
	}{
		{"public_key", rp.PublicKey, &d.PublicKey},
		{"user_data", rp.UserData, &d.UserData},
		{"nonce", rp.Nonce, &d.Nonce},
	} {
		if f.raw == nil || isNull(f.raw) {
			continue
		}
		// Only a byte string or null: the decoder would also turn
		// undefined (0xf7) into an empty byte string.
		if f.raw[0]>>5 != 2 {
			return nil, malformed("%s is not a byte string or null", f.name)
		}
		var b []byte
		if payloadMode.Unmarshal(f.raw, &b) != nil {
			return nil, malformed("%s is not a byte string or null", f.name)
		}
		if len(b) > MaxFieldSize {
			return nil, malformed("%s is %d bytes, limit %d", f.name, len(b), MaxFieldSize)
		}
		if b == nil {
			b = []byte{}
		}
		*f.dst = b
	}
	return d, nil
}

func parsePCRs(raw cbor.RawMessage, name string) (map[int][]byte, error) {
	var m map[uint64][]byte
	if isNull(raw) || payloadMode.Unmarshal(raw, &m) != nil {
		return nil, malformed("%s is not a map of unsigned integers to byte strings", name)
	}
	if len(m) == 0 || len(m) > MaxPCRs {
		return nil, malformed("%s has %d entries, want 1..%d", name, len(m), MaxPCRs)
	}
	out := make(map[int][]byte, len(m))
	for i, v := range m {
		if i >= MaxPCRs {
			return nil, malformed("%s index %d out of range 0..%d", name, i, MaxPCRs-1)
		}
		if len(v) != PCRSize {
			return nil, malformed("%s[%d] is %d bytes, want %d", name, i, len(v), PCRSize)
		}
		out[int(i)] = v
	}
	return out, nil
}
