package eif

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadEIF checks that Parse never panics, that anything it accepts
// re-encodes to the same bytes (the format has one canonical encoding), and
// that the CRC check and measurements are consistent.
func FuzzReadEIF(f *testing.F) {
	b, _, err := Build(testSpec())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:HeaderSize])
	f.Add(b[:HeaderSize+SectionHeaderSize+3])
	s := testSpec()
	s.Metadata = []byte("{}")
	s.Ramdisks = [][]byte{{1, 2, 3}}
	s.Signer = fakeSigner{cert: []byte("c")}
	b2, _, err := Build(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b2)
	for _, g := range []string{"golden_v4.eif", "golden_v4_signed_arm64.eif"} {
		b, err := os.ReadFile(filepath.Join("testdata", g))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		img, err := ParseWithOptions(in, ParseOptions{IgnoreCRC: true})
		if err != nil {
			if _, err2 := Parse(in); err2 == nil {
				t.Fatal("strict parse accepted what the lenient one rejected")
			}
			return
		}
		_ = img.Measure()
		out, err := img.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		stored, _ := StoredCRC(in)
		computed, _ := CRC(in)
		_, strictErr := Parse(in)
		if (stored == computed) != (strictErr == nil) {
			t.Fatalf("CRC stored %08x computed %08x, strict error %v", stored, computed, strictErr)
		}
		if stored == computed && !bytes.Equal(out, in) {
			t.Fatal("accepted input does not re-encode to itself")
		}
	})
}
