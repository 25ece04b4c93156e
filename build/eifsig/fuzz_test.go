package eifsig

import (
	"crypto/elliptic"
	"testing"
)

// FuzzDecodeSection feeds arbitrary bytes to the section decoder and the
// verifier; neither may panic, and a decoded section re-encodes and decodes
// to the same value.
func FuzzDecodeSection(f *testing.F) {
	certPEM, keyPEM := testCert(f, elliptic.P384())
	s, err := NewSigner(certPEM, keyPEM)
	if err != nil {
		f.Fatal(err)
	}
	sec, err := s.SignPCR0(testPCR(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sec)
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa0})
	f.Fuzz(func(t *testing.T, in []byte) {
		sigs, err := DecodeSection(in)
		_, _ = Verify(in, testPCR(1))
		_, _, _ = Inspect(in)
		if err != nil {
			return
		}
		out, err := EncodeSection(sigs)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeSection(out)
		if err != nil || len(again) != len(sigs) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
