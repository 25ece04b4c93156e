package attest_test

import (
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

// seed adds the corpus and a few emulator documents.
func seed(f *testing.F) *nsmtest.Emulator {
	for _, dir := range []string{"valid", "invalid"} {
		for _, doc := range corpus(f, dir) {
			f.Add(doc)
		}
	}
	emu, err := nsmtest.New(nsmtest.Options{IndefinitePayload: true, DocumentPCRs: 32})
	if err != nil {
		f.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		f.Fatal(err)
	}
	defer n.Close()
	doc, err := n.Attest(f.Context(), attest.Request{Nonce: []byte("n"), UserData: []byte{}, PublicKey: make([]byte, 1024)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add(append([]byte{0xd2}, doc...))
	f.Add([]byte{})
	f.Add([]byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0})
	return emu
}

func FuzzVerify(f *testing.F) {
	emu := seed(f)
	roots := emu.Roots()
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, opts := range []attest.VerifyOptions{{}, {Roots: roots}} {
			d, err := attest.Verify(doc, opts)
			if (d == nil) == (err == nil) {
				t.Fatalf("Verify returned document %v and error %v", d != nil, err)
			}
			if err != nil && strings.Contains(err.Error(), "panic") {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		d, err := attest.ParseUnverified(doc)
		if (d == nil) == (err == nil) {
			t.Fatalf("ParseUnverified returned document %v and error %v", d != nil, err)
		}
		if err != nil && strings.Contains(err.Error(), "panic") {
			t.Fatal(err)
		}
		if d != nil && (d.ModuleID == "" || d.Digest != "SHA384" || len(d.PCRs) == 0 || len(d.PCRs) > 32 || d.Certificate == nil || len(d.CABundle) == 0) {
			t.Fatalf("accepted an invalid document: %+v", d)
		}
	})
}
