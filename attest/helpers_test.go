package attest_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// corpus returns the documents in testdata/<dir> by file name.
func corpus(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.cbor"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in testdata/%s: %v", dir, err)
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func readCorpus(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "valid", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kv is one payload map entry, encoded in order so tests can produce
// duplicate keys and unusual encodings.
type kv struct {
	k string
	v any
}

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeMap encodes pairs as a CBOR map (definite or indefinite length).
// A value of type cbor.RawMessage is inserted as is.
func encodeMap(t testing.TB, pairs []kv, indefinite bool) []byte {
	t.Helper()
	var b []byte
	if indefinite {
		b = append(b, 0xbf)
	} else {
		b = append(b, head(5, len(pairs))...)
	}
	for _, p := range pairs {
		b = append(b, mustCBOR(t, p.k)...)
		if raw, ok := p.v.(cbor.RawMessage); ok {
			b = append(b, raw...)
		} else {
			b = append(b, mustCBOR(t, p.v)...)
		}
	}
	if indefinite {
		b = append(b, 0xff)
	}
	return b
}

func head(mt byte, n int) []byte {
	switch {
	case n < 24:
		return []byte{mt<<5 | byte(n)}
	case n < 256:
		return []byte{mt<<5 | 24, byte(n)}
	default:
		return []byte{mt<<5 | 25, byte(n >> 8), byte(n)}
	}
}

func bstr(b []byte) []byte { return append(head(2, len(b)), b...) }

// coseDoc assembles [protected, {}, payload, sig] by hand.
func coseDoc(protected, payload, sig []byte) []byte {
	out := []byte{0x84}
	out = append(out, bstr(protected)...)
	out = append(out, 0xa0)
	out = append(out, bstr(payload)...)
	return append(out, bstr(sig)...)
}

var es384 = []byte{0xa1, 0x01, 0x38, 0x22}

// signDoc signs payload as the NSM does, with key.
func signDoc(t testing.TB, key *ecdsa.PrivateKey, payload []byte) []byte {
	t.Helper()
	sigStruct := []byte{0x84, 0x6a}
	sigStruct = append(sigStruct, "Signature1"...)
	sigStruct = append(sigStruct, bstr(es384)...)
	sigStruct = append(sigStruct, 0x40)
	sigStruct = append(sigStruct, bstr(payload)...)
	digest := sha512.Sum384(sigStruct)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	s.FillBytes(sig[48:])
	return coseDoc(es384, payload, sig)
}

// coseParts splits a document into its four elements.
func coseParts(t testing.TB, doc []byte) (protected, payload, sig []byte) {
	t.Helper()
	var msg struct {
		_         struct{} `cbor:",toarray"`
		Protected []byte
		Unprot    cbor.RawMessage
		Payload   []byte
		Sig       []byte
	}
	if err := cbor.Unmarshal(doc, &msg); err != nil {
		t.Fatal(err)
	}
	return msg.Protected, msg.Payload, msg.Sig
}
