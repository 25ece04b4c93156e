package eifsig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/enclavekit/build/eif"
)

// handSigned builds a signature section the way nitro-cli does for a key on
// any curve, without this package's encoder: aws-nitro-enclaves-cose picks
// the algorithm from the key's curve (src/crypto/mod.rs
// ec_curve_to_parameters: P-256 → ES256/SHA-256, P-384 → ES384/SHA-384,
// P-521 → ES512/SHA-512) and writes r ‖ s, each padded to the curve size
// (src/crypto/openssl_pkey.rs); the EIF format description lists -7, -35
// and -36 as the algorithms of the protected header.
func handSigned(t *testing.T, curve elliptic.Curve, alg int64, h crypto.Hash, size int, pcr0 eif.PCR) []byte {
	t.Helper()
	certPEM, keyPEM := testCert(t, curve)
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	u8 := func(b []byte) []uint64 {
		out := make([]uint64, len(b))
		for i, x := range b {
			out[i] = uint64(x)
		}
		return out
	}
	payload, err := cbor.Marshal(map[string]any{"register_index": 0, "register_value": u8(pcr0[:])})
	if err != nil {
		t.Fatal(err)
	}
	protected, _ := cbor.Marshal(map[int64]int64{1: alg})
	tbs, _ := cbor.Marshal([]any{"Signature1", protected, []byte{}, payload})
	hh := h.New()
	hh.Write(tbs)
	r, s, err := ecdsa.Sign(rand.Reader, key, hh.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	cose, _ := cbor.Marshal([]any{protected, map[int64]any{}, payload, sig})
	sec, err := cbor.Marshal([]map[string][]uint64{{"signing_certificate": u8(certPEM), "signature": u8(cose)}})
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// nitro-cli signs with P-256 and P-521 keys too; describe used to report
// such a valid image as a signature failure.
func TestVerifyEveryNitroCurve(t *testing.T) {
	pcr0 := testPCR(3)
	for _, tc := range []struct {
		name  string
		curve elliptic.Curve
		alg   int64
		hash  crypto.Hash
		size  int
	}{
		{"ES256", elliptic.P256(), -7, crypto.SHA256, 32},
		{"ES384", elliptic.P384(), -35, crypto.SHA384, 48},
		{"ES512", elliptic.P521(), -36, crypto.SHA512, 66},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec := handSigned(t, tc.curve, tc.alg, tc.hash, tc.size, pcr0)
			res, err := Verify(sec, pcr0)
			if err != nil {
				t.Fatalf("valid %s signature rejected: %v", tc.name, err)
			}
			if res.SignedPCR0 != pcr0 || res.PCR8 != eif.PCR8(res.Certificate.Raw) {
				t.Fatal("result")
			}
			if _, err := Verify(sec, testPCR(4)); !errors.Is(err, ErrSignature) {
				t.Fatalf("other PCR0: %v", err)
			}
		})
	}
	// The algorithm must match the certificate's curve.
	sec := handSigned(t, elliptic.P256(), -35, crypto.SHA384, 32, pcr0)
	if _, err := Verify(sec, pcr0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ES384 header with a P-256 key: %v", err)
	}
}
