package cms

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open with the sample's key, seeded
// with the real KMS answer and its DER form: it must never panic, and
// must answer with a plaintext or the one generic error.
func FuzzOpen(f *testing.F) {
	s := sample()
	f.Add(s.ct)
	der, _ := toDER(s.ct)
	f.Add(der)
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Open(s.key, b)
		if err != nil {
			if err != ErrOpen || got != nil {
				t.Fatalf("Open = %x, %v", got, err)
			}
			return
		}
		// Anything that opens has KMS's shape.
		if _, err := parse(b); err != nil {
			t.Fatalf("opened an input parse refuses: %v", err)
		}
	})
}

// FuzzToDER: the BER step never panics, its output is DER that
// encoding/asn1 reads whole, and DER is a fixed point.
func FuzzToDER(f *testing.F) {
	f.Add(sample().ct)
	f.Add([]byte{0x30, 0x80, 0x04, 0x01, 0x41, 0x00, 0x00})
	f.Add([]byte{0x30, 0x80, 0xa0, 0x80, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		der, err := toDER(b)
		if err != nil {
			return
		}
		var v asn1.RawValue
		if rest, err := asn1.Unmarshal(der, &v); err != nil || len(rest) != 0 {
			t.Fatalf("toDER(%x) = %x, which encoding/asn1 refuses: %v", b, der, err)
		}
		again, err := toDER(der)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("toDER is not idempotent on %x: %x, %v", der, again, err)
		}
	})
}

// FuzzSealOpen: whatever Seal writes, Open reads back.
func FuzzSealOpen(f *testing.F) {
	f.Add(sample().plain)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		key := testKey(t)
		ct, err := Seal(rand.Reader, &key.PublicKey, p)
		if err != nil {
			if len(p) <= MaxSize/2 {
				t.Fatal(err)
			}
			return
		}
		got, err := Open(key, ct)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("Open(Seal(%x)) = %x, %v", p, got, err)
		}
	})
}
