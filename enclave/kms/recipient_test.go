package kms

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The real KMS sample (internal/cms/testdata, see its MANIFEST.md).
func TestOpenRecipientRealSample(t *testing.T) {
	ct, err := os.ReadFile("internal/cms/testdata/edgebit_ciphertext_for_recipient.ber")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := os.ReadFile("internal/cms/testdata/edgebit_recipient_key.pem")
	blk, _ := pem.Decode(p)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := os.ReadFile("internal/cms/testdata/edgebit_plaintext.hex")
	want, _ := hex.DecodeString(strings.TrimSpace(string(h)))
	s, err := OpenRecipient(key, ct)
	if err != nil || !s.EqualBytes(want) {
		t.Fatalf("OpenRecipient = %x, %v", s.Bytes(), err)
	}
	env, mine, err := RecipientKeyID(ct, &key.PublicKey)
	if err != nil || !bytes.Equal(env, mine) {
		t.Fatalf("RecipientKeyID = %x, %x, %v", env, mine, err)
	}
	if _, err := OpenRecipient(key, ct[1:]); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestRecipientKeyRotation(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	r := &recipientKeys{lifetime: time.Minute, now: func() time.Time { return now }}
	a, err := r.get()
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Second)
	if b, _ := r.get(); b != a {
		t.Fatal("key replaced before its lifetime")
	}
	now = now.Add(time.Second)
	b, _ := r.get()
	if b == a || bytes.Equal(a.spki, b.spki) {
		t.Fatal("key not replaced after its lifetime")
	}
	now = now.Add(-time.Hour) // the clock went back: do not trust the old key's age
	if c, _ := r.get(); c == b {
		t.Fatal("key kept although the clock went back")
	}
}
