package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

// sigDER must produce exactly the DER that encoding/asn1 gives for the
// same two integers, the form crypto/ecdsa.Verify builds and VerifyASN1
// parses, for every shape of r and s: zero, leading zero bytes, the high
// bit set (a sign byte is needed), and full width.
func TestSigDER(t *testing.T) {
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	half := func(lead int, rest []byte) []byte { return append(make([]byte, lead), rest...) }
	for _, tc := range []struct {
		name string
		r, s []byte
	}{
		{"both zero", fill(48, 0), fill(48, 0)},
		{"one", half(47, []byte{1}), half(47, []byte{1})},
		{"high bit set, full width", fill(48, 0xff), fill(48, 0x80)},
		{"high bit clear, full width", fill(48, 0x7f), fill(48, 0x01)},
		{"leading zeros then high bit", half(5, fill(43, 0x80)), half(1, fill(47, 0x7f))},
		{"r zero, s full", fill(48, 0), fill(48, 0xaa)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(tc.r), new(big.Int).SetBytes(tc.s)})
			if err != nil {
				t.Fatal(err)
			}
			var buf [maxSigDER]byte
			got := sigDER(buf[:0], append(append([]byte(nil), tc.r...), tc.s...))
			if !bytes.Equal(got, want) {
				t.Fatalf("sigDER = %x\nwant     %x", got, want)
			}
			if len(got) > maxSigDER {
				t.Fatalf("%d bytes, over maxSigDER %d", len(got), maxSigDER)
			}
		})
	}
}

// A chain verified in full is cached with its leaf: the next document
// signed by the same leaf (the NSM's leaf signs every document of its
// hours) is neither parsed nor checked against the chain again.
func TestFullVerificationRecordsLeaf(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("testdata", "valid", "hf_nitrite_test_hex_attestation_doc.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	cache := NewChainCache(4)
	d, err := Verify(doc, VerifyOptions{ChainCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	if cache.Len() != 1 {
		t.Fatalf("%d chains cached, want 1", cache.Len())
	}
	e := cache.lru.Front().Value.(*cacheEntry)
	if !cache.leafKnown(e, cacheKey(sha256.Sum256(d.Certificate.Raw)), d.Certificate) {
		t.Fatal("the leaf verified with the chain is not recorded")
	}
	d2, err := Verify(doc, VerifyOptions{ChainCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	if d2.Certificate != d.Certificate {
		t.Fatal("the second document's leaf was parsed again")
	}
}
