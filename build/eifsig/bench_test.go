package eifsig

import (
	"crypto/elliptic"
	"testing"
)

func BenchmarkSignPCR0(b *testing.B) {
	certPEM, keyPEM := testCert(b, elliptic.P384())
	s, err := NewSigner(certPEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(48)
	for b.Loop() {
		if _, err := s.SignPCR0(testPCR(1)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	certPEM, keyPEM := testCert(b, elliptic.P384())
	s, _ := NewSigner(certPEM, keyPEM)
	sec, _ := s.SignPCR0(testPCR(1))
	b.ReportAllocs()
	b.SetBytes(int64(len(sec)))
	for b.Loop() {
		if _, err := Verify(sec, testPCR(1)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSection(b *testing.B) {
	certPEM, keyPEM := testCert(b, elliptic.P384())
	s, _ := NewSigner(certPEM, keyPEM)
	sec, _ := s.SignPCR0(testPCR(1))
	b.ReportAllocs()
	b.SetBytes(int64(len(sec)))
	for b.Loop() {
		if _, err := DecodeSection(sec); err != nil {
			b.Fatal(err)
		}
	}
}
