package eifsig

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	_ "crypto/sha256" // crypto.SHA256 for ES256
	_ "crypto/sha512" // crypto.SHA384 and SHA512
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/enclavekit/build/eif"
)

// Sentinel errors.
var (
	ErrMalformed   = errors.New("eifsig: malformed signature section")
	ErrCertificate = errors.New("eifsig: bad signing certificate")
	ErrSignature   = errors.New("eifsig: signature does not verify")
	ErrKey         = errors.New("eifsig: unsupported signing key")
)

// Limits on what the decoder accepts.
const (
	// MaxElements bounds the signature array and every byte array in it;
	// a PEM certificate is a few KiB.
	MaxElements = 64 << 10
	// MaxSignatures bounds the number of PCR signatures in a section.
	MaxSignatures = 32
)

// COSE algorithm identifiers for ECDSA (RFC 9053). nitro-cli signs with
// whichever of P-256, P-384 and P-521 the key is on, and aws-nitro-enclaves-cose
// derives the algorithm, digest and r/s size from the curve
// (src/crypto/mod.rs, ec_curve_to_parameters).
const (
	algES256 = -7
	algES384 = -35
	algES512 = -36
)

type coseAlg struct {
	curve elliptic.Curve
	hash  crypto.Hash
	size  int // bytes of r and of s
}

var coseAlgs = map[int64]coseAlg{
	algES256: {elliptic.P256(), crypto.SHA256, 32},
	algES384: {elliptic.P384(), crypto.SHA384, 48},
	algES512: {elliptic.P521(), crypto.SHA512, 66},
}

var (
	decMode cbor.DecMode
	encMode cbor.EncMode
)

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   8,
		MaxArrayElements:  MaxElements,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	// Field order as declared (serde's order), minimal integer encoding,
	// definite lengths: what serde_cbor produces.
	encMode, err = cbor.EncOptions{Sort: cbor.SortNone, IndefLength: cbor.IndefLengthForbidden}.EncMode()
	if err != nil {
		panic(err)
	}
}

// u8array is a Rust Vec<u8> as serde_cbor encodes it: an array of uints.
type u8array []byte

func (a u8array) MarshalCBOR() ([]byte, error) {
	u := make([]uint16, len(a))
	for i, x := range a {
		u[i] = uint16(x)
	}
	return encMode.Marshal(u)
}

func (a *u8array) UnmarshalCBOR(b []byte) error {
	var u []uint64
	if err := decMode.Unmarshal(b, &u); err != nil {
		return err
	}
	out := make([]byte, len(u)) // len(u) is bounded by MaxElements and the input size
	for i, x := range u {
		if x > 0xff {
			return fmt.Errorf("element %d is %d, not a byte", i, x)
		}
		out[i] = byte(x)
	}
	*a = out
	return nil
}

type pcrSignatureWire struct {
	SigningCertificate u8array `cbor:"signing_certificate"`
	Signature          u8array `cbor:"signature"`
}

type pcrInfoWire struct {
	RegisterIndex int32   `cbor:"register_index"`
	RegisterValue u8array `cbor:"register_value"`
}

type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int64]cbor.RawMessage
	Payload     []byte
	Signature   []byte
}

// PCRSignature is one element of the signature section.
type PCRSignature struct {
	// SigningCertificate is the certificate file as given to the builder
	// (PEM; nitro-cli stores the file's bytes).
	SigningCertificate []byte
	// Signature is an untagged COSE_Sign1 over the PCR's index and value.
	Signature []byte
}

// DecodeSection decodes a signature section strictly.
func DecodeSection(b []byte) ([]PCRSignature, error) {
	var w []pcrSignatureWire
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(w) == 0 || len(w) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, want 1..%d", ErrMalformed, len(w), MaxSignatures)
	}
	out := make([]PCRSignature, len(w))
	for i, s := range w {
		if len(s.SigningCertificate) == 0 || len(s.Signature) == 0 {
			return nil, fmt.Errorf("%w: signature %d has an empty certificate or signature", ErrMalformed, i)
		}
		out[i] = PCRSignature{SigningCertificate: s.SigningCertificate, Signature: s.Signature}
	}
	return out, nil
}

// EncodeSection encodes a signature section as nitro-cli does.
func EncodeSection(sigs []PCRSignature) ([]byte, error) {
	if len(sigs) == 0 || len(sigs) > MaxSignatures {
		return nil, fmt.Errorf("eifsig: %d signatures, want 1..%d", len(sigs), MaxSignatures)
	}
	w := make([]pcrSignatureWire, len(sigs))
	for i, s := range sigs {
		w[i] = pcrSignatureWire{SigningCertificate: s.SigningCertificate, Signature: s.Signature}
	}
	return encMode.Marshal(w)
}

// ParseCertificate returns the certificate in a PEM file as nitro-cli reads
// it (the first PEM block, which must be a CERTIFICATE).
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrCertificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	return cert, nil
}

// Signer signs PCR0 with an ECDSA P-384 key; it implements eif.Signer.
type Signer struct {
	certPEM []byte
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
}

// NewSigner loads a PEM certificate and its PEM private key (SEC 1 "EC
// PRIVATE KEY" or PKCS #8 "PRIVATE KEY"). The key must be P-384 and match
// the certificate.
func NewSigner(certPEM, keyPEM []byte) (*Signer, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block in the key file", ErrKey)
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		var k any
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err == nil {
			var ok bool
			if key, ok = k.(*ecdsa.PrivateKey); !ok {
				return nil, fmt.Errorf("%w: %T, want ECDSA P-384", ErrKey, k)
			}
		}
	default:
		return nil, fmt.Errorf("%w: PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", ErrKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if key.Curve != elliptic.P384() {
		return nil, fmt.Errorf("%w: curve %s, want P-384", ErrKey, key.Curve.Params().Name)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: the key does not match the certificate", ErrKey)
	}
	return &Signer{certPEM: bytes.Clone(certPEM), cert: cert, key: key}, nil
}

// CertificateDER returns the DER of the signing certificate.
func (s *Signer) CertificateDER() []byte { return s.cert.Raw }

// SignPCR0 returns a signature section holding one COSE_Sign1 over PCR0.
// ECDSA signatures are randomised, so two signed builds differ in this
// section (and the CRC) while every PCR stays the same.
func (s *Signer) SignPCR0(pcr0 eif.PCR) ([]byte, error) {
	payload, err := encMode.Marshal(pcrInfoWire{RegisterIndex: 0, RegisterValue: pcr0[:]})
	if err != nil {
		return nil, err
	}
	protected, err := encMode.Marshal(map[int64]int64{1: algES384})
	if err != nil {
		return nil, err
	}
	digest, err := sigStructureDigest(protected, payload, crypto.SHA384)
	if err != nil {
		return nil, err
	}
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	ss.FillBytes(sig[48:])
	cose, err := encMode.Marshal(coseSign1{
		Protected:   protected,
		Unprotected: map[int64]cbor.RawMessage{},
		Payload:     payload,
		Signature:   sig,
	})
	if err != nil {
		return nil, err
	}
	return EncodeSection([]PCRSignature{{SigningCertificate: s.certPEM, Signature: cose}})
}

// sigStructureDigest hashes the COSE Sig_structure (RFC 9052 §4.4) for a
// Signature1 with empty external AAD.
func sigStructureDigest(protected, payload []byte, h crypto.Hash) ([]byte, error) {
	tbs, err := encMode.Marshal([]any{"Signature1", protected, []byte{}, payload})
	if err != nil {
		return nil, err
	}
	hh := h.New()
	hh.Write(tbs)
	return hh.Sum(nil), nil
}

// Result is what Verify learned from a signature section.
type Result struct {
	Certificate *x509.Certificate
	PCR8        eif.PCR
	// SignedPCR0 is the PCR0 value the signature covers.
	SignedPCR0 eif.PCR
}

// Inspect decodes the section and computes PCR8 from its first certificate
// without checking the signature.
func Inspect(section []byte) (*x509.Certificate, eif.PCR, error) {
	sigs, err := DecodeSection(section)
	if err != nil {
		return nil, eif.PCR{}, err
	}
	cert, err := ParseCertificate(sigs[0].SigningCertificate)
	if err != nil {
		return nil, eif.PCR{}, err
	}
	return cert, eif.PCR8(cert.Raw), nil
}

// Verify checks that the section's first signature is a valid ES256, ES384
// or ES512 COSE_Sign1 (the algorithm matching the curve of the
// certificate's key, as nitro-cli signs), over register 0 with value pcr0.
// It does not check the certificate's validity period or chain.
func Verify(section []byte, pcr0 eif.PCR) (*Result, error) {
	sigs, err := DecodeSection(section)
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertificate(sigs[0].SigningCertificate)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %T, want ECDSA", ErrCertificate, cert.PublicKey)
	}
	var msg coseSign1
	if err := decMode.Unmarshal(sigs[0].Signature, &msg); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %v", ErrMalformed, err)
	}
	var hdr map[int64]int64
	if err := decMode.Unmarshal(msg.Protected, &hdr); err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	alg, ok := coseAlgs[hdr[1]]
	if _, present := hdr[1]; !present || !ok {
		return nil, fmt.Errorf("%w: protected header alg %d, want %d, %d or %d (ES256, ES384, ES512)", ErrMalformed, hdr[1], algES256, algES384, algES512)
	}
	if alg.curve != pub.Curve {
		return nil, fmt.Errorf("%w: protected header alg %d does not match the certificate's curve %s", ErrMalformed, hdr[1], pub.Curve.Params().Name)
	}
	if len(msg.Signature) != 2*alg.size {
		return nil, fmt.Errorf("%w: signature is %d bytes, want %d", ErrMalformed, len(msg.Signature), 2*alg.size)
	}
	var info pcrInfoWire
	if err := decMode.Unmarshal(msg.Payload, &info); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if info.RegisterIndex != 0 || len(info.RegisterValue) != eif.PCRSize {
		return nil, fmt.Errorf("%w: payload signs register %d with %d bytes, want register 0 with %d",
			ErrMalformed, info.RegisterIndex, len(info.RegisterValue), eif.PCRSize)
	}
	digest, err := sigStructureDigest(msg.Protected, msg.Payload, alg.hash)
	if err != nil {
		return nil, err
	}
	r := new(big.Int).SetBytes(msg.Signature[:alg.size])
	s := new(big.Int).SetBytes(msg.Signature[alg.size:])
	if !ecdsa.Verify(pub, digest, r, s) {
		return nil, ErrSignature
	}
	res := &Result{Certificate: cert, PCR8: eif.PCR8(cert.Raw)}
	copy(res.SignedPCR0[:], info.RegisterValue)
	if res.SignedPCR0 != pcr0 {
		return nil, fmt.Errorf("%w: it signs PCR0 %s, the image measures %s", ErrSignature, res.SignedPCR0, pcr0)
	}
	return res, nil
}

// Measure computes every PCR of img, PCR8 included when it is signed.
func Measure(img *eif.Image) (eif.Measurements, error) {
	m := img.Measure()
	if !img.Signed() {
		return m, nil
	}
	_, p8, err := Inspect(img.Signature)
	if err != nil {
		return eif.Measurements{}, err
	}
	m.PCR8 = &p8
	return m, nil
}
