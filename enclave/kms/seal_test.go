package kms

import (
	"bytes"
	"errors"
	"testing"
)

func sealedFixture() []byte {
	b := appendField(appendField(appendField(bytes.Clone(sealMagic), []byte("app")), []byte(arnA)), []byte("kms-blob"))
	b = append(b, make([]byte, 12)...)
	return append(b, make([]byte, 16+5)...)
}

func TestParseSealed(t *testing.T) {
	good := sealedFixture()
	s, err := parseSealed(good)
	if err != nil || s.app != "app" || s.keyID != arnA || string(s.blob) != "kms-blob" || len(s.nonce) != 12 || len(s.ciphertext) != 21 {
		t.Fatalf("parseSealed = %+v, %v", s, err)
	}
	if !bytes.Equal(s.header, good[:len(good)-12-21]) {
		t.Fatal("the additional data is not the whole header")
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"other magic", append([]byte("EKSEAL\x00\x02"), good[8:]...)},
		{"truncated tag", good[:len(good)-22]},
		{"empty app", append(bytes.Clone(sealMagic), 0, 0)},
		{"app past end", append(bytes.Clone(sealMagic), 0xff, 0xff, 'a')},
		{"app over limit", appendField(bytes.Clone(sealMagic), bytes.Repeat([]byte("a"), MaxAppName+1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseSealed(tc.b); !errors.Is(err, ErrSealed) {
				t.Fatalf("parseSealed = %v, want ErrSealed", err)
			}
		})
	}
}

func FuzzParseSealed(f *testing.F) {
	f.Add(sealedFixture())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSealed(b)
		if err != nil {
			return
		}
		// What parses is the header followed by nonce and ciphertext.
		if len(s.header)+len(s.nonce)+len(s.ciphertext) != len(b) || !bytes.HasPrefix(b, s.header) || len(s.nonce) != 12 || len(s.ciphertext) < 16 {
			t.Fatalf("inconsistent parse of %x: %+v", b, s)
		}
	})
}
