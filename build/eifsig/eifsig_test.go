package eifsig

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/enclavekit/build/eif"
)

// testCert returns a self-signed P-384 certificate and key, both PEM.
func testCert(t testing.TB, curve elliptic.Curve) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "enclavekit test", Organization: []string{"enclavekit"}},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<32, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func testPCR(seed byte) eif.PCR {
	var p eif.PCR
	for i := range p {
		p[i] = seed + byte(i)*7
	}
	return p
}

func TestSignVerifyRoundTrip(t *testing.T) {
	certPEM, keyPEM := testCert(t, elliptic.P384())
	s, err := NewSigner(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := testPCR(3)
	sec, err := s.SignPCR0(pcr0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(sec, pcr0)
	if err != nil {
		t.Fatal(err)
	}
	d := sha512.Sum384(s.CertificateDER())
	if res.PCR8 != eif.Extend(d[:]) || res.SignedPCR0 != pcr0 {
		t.Fatal("PCR8 or signed PCR0 wrong")
	}
	sigs, err := DecodeSection(sec)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || !bytes.Equal(sigs[0].SigningCertificate, certPEM) {
		t.Fatal("section does not carry the PEM certificate")
	}
	again, err := EncodeSection(sigs)
	if err != nil || !bytes.Equal(again, sec) {
		t.Fatalf("re-encode differs: %v", err)
	}
	// Wrong PCR0, tampered signature, other certificate.
	if _, err := Verify(sec, testPCR(4)); !errors.Is(err, ErrSignature) {
		t.Errorf("wrong PCR0: %v", err)
	}
	other, _ := testCert(t, elliptic.P384())
	sigs2 := []PCRSignature{{SigningCertificate: other, Signature: sigs[0].Signature}}
	sec2, _ := EncodeSection(sigs2)
	if _, err := Verify(sec2, pcr0); !errors.Is(err, ErrSignature) {
		t.Errorf("other certificate: %v", err)
	}
	tampered := bytes.Clone(sigs[0].Signature)
	tampered[len(tampered)-1] ^= 1
	sec3, _ := EncodeSection([]PCRSignature{{SigningCertificate: certPEM, Signature: tampered}})
	if _, err := Verify(sec3, pcr0); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered signature: %v", err)
	}
}

// TestWireShape checks the bytes against the layout serde_cbor produces,
// decoded generically rather than through this package's types.
func TestWireShape(t *testing.T) {
	certPEM, keyPEM := testCert(t, elliptic.P384())
	s, err := NewSigner(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := testPCR(0)
	sec, err := s.SignPCR0(pcr0)
	if err != nil {
		t.Fatal(err)
	}
	var generic []map[string][]uint64
	if err := cbor.Unmarshal(sec, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic) != 1 || len(generic[0]) != 2 || len(generic[0]["signing_certificate"]) != len(certPEM) {
		t.Fatalf("section shape: %d elements", len(generic))
	}
	cose := make([]byte, len(generic[0]["signature"]))
	for i, x := range generic[0]["signature"] {
		cose[i] = byte(x)
	}
	var arr []cbor.RawMessage
	if err := cbor.Unmarshal(cose, &arr); err != nil || len(arr) != 4 {
		t.Fatalf("COSE_Sign1 is not a 4-array: %v", err)
	}
	if cose[0] != 0x84 {
		t.Fatalf("COSE_Sign1 must be untagged, starts 0x%02x", cose[0])
	}
	var protected, payload, sig []byte
	_ = cbor.Unmarshal(arr[0], &protected)
	_ = cbor.Unmarshal(arr[2], &payload)
	_ = cbor.Unmarshal(arr[3], &sig)
	if hex.EncodeToString(protected) != "a1013822" { // {1: -35}
		t.Errorf("protected header %x", protected)
	}
	if !bytes.Equal(arr[1], []byte{0xa0}) {
		t.Errorf("unprotected header %x, want empty map", arr[1])
	}
	// {"register_index": 0, "register_value": [48 uints]}
	want := []byte{0xa2, 0x6e}
	want = append(want, "register_index"...)
	want = append(want, 0x00, 0x6e)
	want = append(want, "register_value"...)
	want = append(want, 0x98, 0x30)
	for _, x := range pcr0 {
		if x < 24 {
			want = append(want, x)
		} else {
			want = append(want, 0x18, x)
		}
	}
	if !bytes.Equal(payload, want) {
		t.Errorf("payload\n got %x\nwant %x", payload, want)
	}
	if len(sig) != 96 {
		t.Errorf("signature %d bytes", len(sig))
	}
}

func TestDecodeSectionStrict(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ok := enc([]map[string][]uint16{{"signing_certificate": {1, 2}, "signature": {3}}})
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"valid", ok, true},
		{"empty input", nil, false},
		{"empty array", enc([]any{}), false},
		{"not an array", enc(map[string]int{"a": 1}), false},
		{"byte string instead of array", enc([]map[string][]byte{{"signing_certificate": {1}, "signature": {2}}}), false},
		{"element over 255", enc([]map[string][]uint16{{"signing_certificate": {256}, "signature": {3}}}), false},
		{"unknown field", enc([]map[string][]uint16{{"signing_certificate": {1}, "signature": {3}, "x": {1}}}), false},
		{"missing signature", enc([]map[string][]uint16{{"signing_certificate": {1}}}), false},
		{"duplicate key", []byte{0x81, 0xa2, 0x69, 's', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', 0x81, 0x01, 0x69, 's', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', 0x81, 0x02}, false},
		{"indefinite array", []byte{0x9f, 0xff}, false},
		{"tagged", append([]byte{0xd8, 0x18}, ok...), false},
		{"trailing byte", append(bytes.Clone(ok), 0), false},
		{"huge array length", []byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeSection(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestNewSignerErrors(t *testing.T) {
	certPEM, keyPEM := testCert(t, elliptic.P384())
	otherCert, _ := testCert(t, elliptic.P384())
	p256Cert, p256Key := testCert(t, elliptic.P256())
	tests := []struct {
		name      string
		cert, key []byte
		wantErr   error
	}{
		{"ok", certPEM, keyPEM, nil},
		{"no cert", nil, keyPEM, ErrCertificate},
		{"key as cert", keyPEM, keyPEM, ErrCertificate},
		{"no key", certPEM, nil, ErrKey},
		{"mismatch", otherCert, keyPEM, ErrKey},
		{"P-256", p256Cert, p256Key, ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSigner(tt.cert, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestSignedEIF(t *testing.T) {
	certPEM, keyPEM := testCert(t, elliptic.P384())
	s, err := NewSigner(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	spec := eif.Spec{Kernel: []byte("k"), Cmdline: "c", Metadata: []byte("{}"), Ramdisks: [][]byte{[]byte("r0"), []byte("r1")}, Signer: s}
	b1, m1, err := eif.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b2, m2, err := eif.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if m1.PCR0 != m2.PCR0 || *m1.PCR8 != *m2.PCR8 {
		t.Fatal("signed builds measure differently")
	}
	// Only the signature section (and CRC) may differ between signed builds.
	img1, err := eif.Parse(b1)
	if err != nil {
		t.Fatal(err)
	}
	img2, _ := eif.Parse(b2)
	// (Its length varies too: serde_cbor encodes each signature byte below
	// 24 in one byte, others in two.)
	if !bytes.Equal(img1.Ramdisks[1], img2.Ramdisks[1]) || !bytes.Equal(img1.Kernel, img2.Kernel) {
		t.Fatal("signed builds differ outside the signature")
	}
	m, err := Measure(img1)
	if err != nil {
		t.Fatal(err)
	}
	if m.PCR8 == nil || *m.PCR8 != *m1.PCR8 || m.PCR0 != m1.PCR0 {
		t.Fatal("Measure disagrees with Build")
	}
	if _, err := Verify(img1.Signature, m.PCR0); err != nil {
		t.Fatal(err)
	}
	unsigned, _, err := eif.Build(eif.Spec{Kernel: []byte("k"), Cmdline: "c", Metadata: []byte("{}"), Ramdisks: [][]byte{[]byte("r0"), []byte("r1")}})
	if err != nil {
		t.Fatal(err)
	}
	u, err := eif.Parse(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	mu, err := Measure(u)
	if err != nil || mu.PCR8 != nil || mu.PCR0 != m.PCR0 {
		t.Fatalf("unsigned: %v", err)
	}
}
