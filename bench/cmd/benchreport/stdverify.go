package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// stdVerify is the attestation peer of the report: it verifies a Nitro
// document by the method hf/nitrite and blocky/nitrite use, written here
// with the standard library and fxamacker/cbor (neither library can be
// fetched through the module proxy on the benchmark machine). The steps:
//
//  1. decode the COSE_Sign1 array and the protected header (alg ES384);
//  2. decode the payload into a struct and check its mandatory fields;
//  3. parse the signing certificate and every cabundle certificate, the
//     root included, put the cabundle in an intermediates pool and let
//     crypto/x509 Verify build the chain to the pinned root, at the
//     document's timestamp (blocky/nitrite's default);
//  4. encode Sig_structure with the CBOR encoder, hash it with SHA-384 and
//     verify the r||s signature with crypto/ecdsa.Verify.
//
// It is a benchmark peer, not a verifier to use: it does none of the
// strict checks of attest.Verify (canonical header, empty unprotected map,
// unknown keys, the chain order of the cabundle, root pinning by bytes).
func stdVerify(doc []byte, roots *x509.CertPool) error {
	var msg struct {
		_           struct{} `cbor:",toarray"`
		Protected   []byte
		Unprotected cbor.RawMessage
		Payload     []byte
		Signature   []byte
	}
	if err := cbor.Unmarshal(doc, &msg); err != nil {
		return fmt.Errorf("COSE_Sign1: %w", err)
	}
	if len(msg.Protected) == 0 || len(msg.Payload) == 0 || len(msg.Signature) == 0 {
		return errors.New("COSE_Sign1: empty protected header, payload or signature")
	}
	var hdr struct {
		Alg int64 `cbor:"1,keyasint"`
	}
	if err := cbor.Unmarshal(msg.Protected, &hdr); err != nil || hdr.Alg != -35 {
		return errors.New("protected header: algorithm is not ES384")
	}

	var p struct {
		ModuleID    string          `cbor:"module_id"`
		Digest      string          `cbor:"digest"`
		Timestamp   uint64          `cbor:"timestamp"`
		PCRs        map[uint][]byte `cbor:"pcrs"`
		Certificate []byte          `cbor:"certificate"`
		CABundle    [][]byte        `cbor:"cabundle"`
		PublicKey   []byte          `cbor:"public_key"`
		UserData    []byte          `cbor:"user_data"`
		Nonce       []byte          `cbor:"nonce"`
	}
	if err := cbor.Unmarshal(msg.Payload, &p); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	switch {
	case p.ModuleID == "" || p.Timestamp == 0 || p.Certificate == nil || len(p.CABundle) == 0:
		return errors.New("payload: a mandatory field is missing")
	case p.Digest != "SHA384":
		return fmt.Errorf("payload: digest %q, want SHA384", p.Digest)
	case len(p.PCRs) == 0 || len(p.PCRs) > 32:
		return fmt.Errorf("payload: %d PCRs, want 1..32", len(p.PCRs))
	case len(p.PublicKey) > 1024 || len(p.UserData) > 1024 || len(p.Nonce) > 1024:
		return errors.New("payload: public_key, user_data or nonce over 1024 bytes")
	}
	for i, v := range p.PCRs {
		if i > 31 || (len(v) != 32 && len(v) != 48 && len(v) != 64) {
			return fmt.Errorf("payload: PCR%d is malformed", i)
		}
	}

	leaf, err := x509.ParseCertificate(p.Certificate)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA || leaf.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		return errors.New("certificate: not an ECDSA key signed with ECDSA-SHA384")
	}
	inter := x509.NewCertPool()
	for i, der := range p.CABundle {
		if len(der) == 0 || len(der) > 1024 {
			return fmt.Errorf("cabundle[%d] is %d bytes, want 1..1024", i, len(der))
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("cabundle[%d]: %w", i, err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   time.UnixMilli(int64(p.Timestamp)),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("chain: %w", err)
	}

	sigStructure, err := cbor.Marshal([]any{"Signature1", msg.Protected, []byte{}, msg.Payload})
	if err != nil {
		return err
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() || len(msg.Signature) != 96 {
		return errors.New("signature: not an ES384 signature from a P-384 key")
	}
	digest := sha512.Sum384(sigStructure)
	r := new(big.Int).SetBytes(msg.Signature[:48])
	s := new(big.Int).SetBytes(msg.Signature[48:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return errors.New("signature does not verify")
	}
	return nil
}
