package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/fxamacker/cbor/v2"
)

// verify calls attest.Verify and checks the result-or-error contract.
func verify(t testing.TB, doc []byte, opts attest.VerifyOptions) (*attest.Document, error) {
	t.Helper()
	d, err := attest.Verify(doc, opts)
	if (d == nil) == (err == nil) {
		t.Fatalf("Verify returned document %v and error %v", d != nil, err)
	}
	return d, err
}

func TestVerifyCorpusValid(t *testing.T) {
	for name, doc := range corpus(t, "valid") {
		t.Run(name, func(t *testing.T) {
			for _, cache := range []bool{false, true, true} {
				d, err := verify(t, doc, attest.VerifyOptions{DisableChainCache: !cache})
				if err != nil {
					t.Fatal(err)
				}
				if d.ModuleID == "" || len(d.PCRs) != 16 || len(d.CABundle) != 4 || d.NitroTPM {
					t.Fatalf("unexpected document: %q, %d PCRs, %d CAs", d.ModuleID, len(d.PCRs), len(d.CABundle))
				}
				if d.Certificate.Subject.CommonName == "" || d.Timestamp.Year() < 2021 {
					t.Fatalf("leaf %v at %v", d.Certificate.Subject, d.Timestamp)
				}
			}
			// Tag 18 (RFC 8152) is accepted too.
			if _, err := verify(t, append([]byte{0xd2}, doc...), attest.VerifyOptions{}); err != nil {
				t.Fatalf("tagged: %v", err)
			}
			// The chain is verified at the document's time; now it is stale.
			if _, err := verify(t, doc, attest.VerifyOptions{MaxAge: time.Hour}); !errors.Is(err, attest.ErrStale) {
				t.Fatalf("MaxAge 1h now: %v, want ErrStale", err)
			}
		})
	}
}

func TestVerifyCorpusInvalid(t *testing.T) {
	want := map[string]error{
		"eternisai_remote_attestation_verifier_invalid_attestation.cbor": attest.ErrSignature,
	}
	docs := corpus(t, "invalid")
	if len(docs) != len(want) {
		t.Fatalf("%d invalid documents, %d expectations", len(docs), len(want))
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			if _, err := verify(t, doc, attest.VerifyOptions{}); !errors.Is(err, want[name]) {
				t.Fatalf("err = %v, want %v", err, want[name])
			}
		})
	}
}

const sample = "hf_nitrite_test_hex_attestation_doc.cbor"

// Every byte of the signature, and a strided sample of the payload and of
// the leaf certificate: any change must make verification fail.
func TestVerifyMutations(t *testing.T) {
	doc := readCorpus(t, sample)
	d, err := verify(t, doc, attest.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, payload, sig := coseParts(t, doc)
	sigAt := bytes.LastIndex(doc, sig)
	payAt := bytes.Index(doc, payload)
	certAt := bytes.Index(doc, d.Certificate.Raw)
	if sigAt < 0 || payAt < 0 || certAt < 0 {
		t.Fatal("cannot locate regions")
	}
	stride := 7
	if testing.Short() {
		stride = 29
	}
	regions := []struct {
		name     string
		at, n    int
		stride   int
		sentinel error // nil: any error
	}{
		{"signature", sigAt, len(sig), 1, attest.ErrSignature},
		{"payload", payAt, len(payload), stride, nil},
		{"certificate", certAt, len(d.Certificate.Raw), stride, nil},
		{"header", 0, payAt, 1, nil},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			mut := bytes.Clone(doc)
			n := 0
			for i := 0; i < r.n; i++ {
				if r.stride > 1 && i%r.stride != 0 && i >= 64 && i < r.n-64 {
					continue
				}
				for _, x := range []byte{0x01, 0x80} {
					mut[r.at+i] ^= x
					_, err := verify(t, mut, attest.VerifyOptions{})
					mut[r.at+i] ^= x
					if err == nil {
						t.Fatalf("flip %#x at %s+%d verified", x, r.name, i)
					}
					if r.sentinel != nil && !errors.Is(err, r.sentinel) {
						t.Fatalf("flip at %s+%d: %v, want %v", r.name, i, err, r.sentinel)
					}
					n++
				}
			}
			t.Logf("%d mutations rejected", n)
		})
	}
}

// replacePayload re-encodes doc's payload with edit applied, keeping the
// original protected header and signature.
func replacePayload(t *testing.T, doc []byte, edit func(map[string]cbor.RawMessage)) []byte {
	t.Helper()
	prot, payload, sig := coseParts(t, doc)
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	return coseDoc(prot, mustCBOR(t, m), sig)
}

func TestVerifyTampering(t *testing.T) {
	doc := readCorpus(t, sample)
	other := readCorpus(t, "tkhq_qos_genesis_attestation_doc.cbor")
	_, otherPayload, _ := coseParts(t, other)
	var om map[string]cbor.RawMessage
	if err := cbor.Unmarshal(otherPayload, &om); err != nil {
		t.Fatal(err)
	}
	d, err := verify(t, doc, attest.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, payload, _ := coseParts(t, doc)

	for _, tc := range []struct {
		name string
		doc  []byte
		opts attest.VerifyOptions
		want error
	}{
		{"swap cabundle", replacePayload(t, doc, func(m map[string]cbor.RawMessage) { m["cabundle"] = om["cabundle"] }), attest.VerifyOptions{}, attest.ErrChain},
		{"swap certificate", replacePayload(t, doc, func(m map[string]cbor.RawMessage) { m["certificate"] = om["certificate"] }), attest.VerifyOptions{}, attest.ErrChain},
		{"change nonce", replacePayload(t, doc, func(m map[string]cbor.RawMessage) { m["nonce"] = mustCBOR(t, []byte("other")) }), attest.VerifyOptions{}, attest.ErrSignature},
		{"re-encoded payload", replacePayload(t, doc, func(map[string]cbor.RawMessage) {}), attest.VerifyOptions{}, attest.ErrSignature},
		{"re-signed foreign key", signDoc(t, foreign, payload), attest.VerifyOptions{}, attest.ErrSignature},
		{"clock past leaf not-after", doc, attest.VerifyOptions{CurrentTime: d.Certificate.NotAfter.Add(time.Second), MaxAge: 365 * 24 * time.Hour}, attest.ErrStale},
		{"clock past leaf, no max age", doc, attest.VerifyOptions{CurrentTime: d.Certificate.NotAfter.Add(time.Second)}, attest.ErrStale},
		{"too old", doc, attest.VerifyOptions{CurrentTime: d.Timestamp.Add(time.Minute), MaxAge: time.Second}, attest.ErrStale},
		{"from the future", doc, attest.VerifyOptions{CurrentTime: d.Timestamp.Add(-time.Hour), MaxAge: time.Hour}, attest.ErrStale},
		{"fresh", doc, attest.VerifyOptions{CurrentTime: d.Timestamp.Add(time.Minute), MaxAge: 2 * time.Minute}, nil},
		{"nonce ok", doc, attest.VerifyOptions{Nonce: d.Nonce}, nil},
		{"nonce mismatch", doc, attest.VerifyOptions{Nonce: []byte("not the nonce")}, attest.ErrNonceMismatch},
		{"user data ok", doc, attest.VerifyOptions{UserData: d.UserData}, nil},
		{"user data mismatch", doc, attest.VerifyOptions{UserData: []byte("x")}, attest.ErrUserDataMismatch},
		{"public key mismatch", doc, attest.VerifyOptions{PublicKey: []byte("x")}, attest.ErrPublicKeyMismatch},
		{"pcr ok", doc, attest.VerifyOptions{PCRs: map[int][]byte{4: d.PCRs[4], 0: d.PCRs[0]}}, nil},
		{"pcr mismatch", doc, attest.VerifyOptions{PCRs: map[int][]byte{4: make([]byte, 48)}}, attest.ErrPCRMismatch},
		{"pcr absent", doc, attest.VerifyOptions{PCRs: map[int][]byte{20: make([]byte, 48)}}, attest.ErrPCRMismatch},
		{"bad options pcr", doc, attest.VerifyOptions{PCRs: map[int][]byte{32: make([]byte, 48)}}, attest.ErrConfig},
		{"bad options max age", doc, attest.VerifyOptions{MaxAge: -1}, attest.ErrConfig},
		{"foreign roots", doc, attest.VerifyOptions{Roots: x509.NewCertPool()}, attest.ErrRootNotPinned},
		{"explicit AWS roots", doc, attest.VerifyOptions{Roots: attest.AWSRoots()}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(t, tc.doc, tc.opts)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// fields returns the payload entries of a well-formed emulator document.
func fields(t *testing.T, emu *nsmtest.Emulator) []kv {
	leaf, bundle := emu.Certificates()
	pcrs := map[int][]byte{}
	for i := range 16 {
		pcrs[i] = make([]byte, 48)
	}
	return []kv{
		{"module_id", emu.ModuleID()},
		{"digest", "SHA384"},
		{"timestamp", uint64(time.Now().UnixMilli())},
		{"pcrs", pcrs},
		{"certificate", leaf},
		{"cabundle", bundle},
		{"public_key", nil},
		{"user_data", nil},
		{"nonce", nil},
	}
}

func set(pairs []kv, k string, v any) []kv {
	out := make([]kv, 0, len(pairs))
	for _, p := range pairs {
		if p.k == k {
			p.v = v
		}
		out = append(out, p)
	}
	return out
}

func without(pairs []kv, k string) []kv {
	out := make([]kv, 0, len(pairs))
	for _, p := range pairs {
		if p.k != k {
			out = append(out, p)
		}
	}
	return out
}

func TestVerifyPayloadFields(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := fields(t, emu)
	pcrs := func(n, size int, from int) map[int][]byte {
		m := map[int][]byte{}
		for i := range n {
			m[from+i] = make([]byte, size)
		}
		return m
	}
	_, bundle := emu.Certificates()
	for _, tc := range []struct {
		name       string
		pairs      []kv
		indefinite bool
		want       error
		check      func(*attest.Document) bool
	}{
		{"ok", base, false, nil, nil},
		{"ok indefinite", base, true, nil, nil},
		{"optional absent", without(without(without(base, "nonce"), "user_data"), "public_key"), false, nil, nil},
		{"user_data 1024", set(base, "user_data", make([]byte, 1024)), false, nil, func(d *attest.Document) bool { return len(d.UserData) == 1024 }},
		{"32 PCRs", set(base, "pcrs", pcrs(32, 48, 0)), false, nil, func(d *attest.Document) bool { return len(d.PCRs) == 32 }},
		{"nitrotpm", append(without(base, "pcrs"), kv{"nitrotpm_pcrs", pcrs(24, 48, 0)}), false, nil, func(d *attest.Document) bool { return d.NitroTPM && len(d.PCRs) == 24 }},
		{"module_id empty", set(base, "module_id", ""), false, attest.ErrMalformed, nil},
		{"module_id bytes", set(base, "module_id", []byte("i-1")), false, attest.ErrMalformed, nil},
		{"digest SHA256", set(base, "digest", "SHA256"), false, attest.ErrMalformed, nil},
		{"timestamp 0", set(base, "timestamp", 0), false, attest.ErrMalformed, nil},
		{"timestamp negative", set(base, "timestamp", -5), false, attest.ErrMalformed, nil},
		{"timestamp text", set(base, "timestamp", "now"), false, attest.ErrMalformed, nil},
		{"pcr index 32", set(base, "pcrs", pcrs(1, 48, 32)), false, attest.ErrMalformed, nil},
		{"pcr 32 bytes", set(base, "pcrs", pcrs(16, 32, 0)), false, attest.ErrMalformed, nil},
		{"33 PCRs", set(base, "pcrs", pcrs(33, 48, 0)), false, attest.ErrMalformed, nil},
		{"pcrs empty", set(base, "pcrs", map[int][]byte{}), false, attest.ErrMalformed, nil},
		{"pcr negative index", set(base, "pcrs", map[int][]byte{-1: make([]byte, 48)}), false, attest.ErrMalformed, nil},
		{"pcrs missing", without(base, "pcrs"), false, attest.ErrMalformed, nil},
		{"pcrs and nitrotpm", append(base, kv{"nitrotpm_pcrs", pcrs(1, 48, 0)}), false, attest.ErrMalformed, nil},
		{"cabundle empty", set(base, "cabundle", [][]byte{}), false, attest.ErrMalformed, nil},
		{"cabundle null", set(base, "cabundle", nil), false, attest.ErrMalformed, nil},
		{"cabundle garbage", set(base, "cabundle", [][]byte{{1, 2, 3}}), false, attest.ErrMalformed, nil},
		{"certificate missing", without(base, "certificate"), false, attest.ErrMalformed, nil},
		{"user_data 1025", set(base, "user_data", make([]byte, 1025)), false, attest.ErrMalformed, nil},
		{"nonce 1025", set(base, "nonce", make([]byte, 1025)), false, attest.ErrMalformed, nil},
		{"public_key 1025", set(base, "public_key", make([]byte, 1025)), false, attest.ErrMalformed, nil},
		{"nonce text", set(base, "nonce", "abc"), false, attest.ErrMalformed, nil},
		{"nonce undefined", set(base, "nonce", cbor.RawMessage{0xf7}), false, attest.ErrMalformed, nil},
		{"user_data undefined", set(base, "user_data", cbor.RawMessage{0xf7}), false, attest.ErrMalformed, nil},
		{"public_key undefined", set(base, "public_key", cbor.RawMessage{0xf7}), false, attest.ErrMalformed, nil},
		{"nonce indefinite bstr", set(base, "nonce", cbor.RawMessage{0x5f, 0x41, 0x61, 0x41, 0x62, 0xff}), true, nil, func(d *attest.Document) bool { return string(d.Nonce) == "ab" }},
		{"unknown key", append(base, kv{"extra", 1}), false, attest.ErrMalformed, nil},
		{"key case", append(without(base, "digest"), kv{"Digest", "SHA384"}), false, attest.ErrMalformed, nil},
		{"duplicate key", append(base, kv{"nonce", []byte("x")}), false, attest.ErrMalformed, nil},
		{"duplicate key indefinite", append(base, kv{"module_id", "i-2"}), true, attest.ErrMalformed, nil},
		{"cabundle garbage root", set(base, "cabundle", append([][]byte{{0x30, 0x00}}, bundle[1:]...)), false, attest.ErrMalformed, nil},
		{"cabundle AWS root", set(base, "cabundle", append([][]byte{awsRootDER(t)}, bundle[1:]...)), false, attest.ErrRootNotPinned, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := encodeMap(t, tc.pairs, tc.indefinite)
			doc, err := emu.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			d, err := verify(t, doc, attest.VerifyOptions{Roots: emu.Roots()})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.check != nil && !tc.check(d) {
				t.Fatalf("check failed on %+v", d)
			}
		})
	}
}

func awsRootDER(t *testing.T) []byte {
	block, _ := pem.Decode(attest.AWSRootPEM())
	if block == nil {
		t.Fatal("AWSRootPEM")
	}
	return block.Bytes
}

func TestVerifyEnvelope(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	payload := encodeMap(t, fields(t, emu), false)
	good, err := emu.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	_, _, sig := coseParts(t, good)
	es256 := []byte{0xa1, 0x01, 0x26}
	withKid := mustCBOR(t, map[int]any{1: -35, 4: []byte("kid")})
	nonCanonical := []byte{0xa1, 0x01, 0x39, 0x00, 0x22} // {1: -35} with a 2-byte argument
	for _, tc := range []struct {
		name string
		doc  []byte
		want error
	}{
		{"good", good, nil},
		{"tagged", append([]byte{0xd2}, good...), nil},
		{"other tag", append([]byte{0xd8, 0x62}, good...), attest.ErrMalformed},
		{"double tag", append([]byte{0xd2, 0xd2}, good...), attest.ErrMalformed},
		{"trailing byte", append(bytes.Clone(good), 0x00), attest.ErrMalformed},
		{"truncated", good[:len(good)-1], attest.ErrMalformed},
		{"empty", nil, attest.ErrMalformed},
		{"ES256 header", coseDoc(es256, payload, sig), attest.ErrAlgorithm},
		{"header with kid", coseDoc(withKid, payload, sig), attest.ErrAlgorithm},
		{"empty header", coseDoc(nil, payload, sig), attest.ErrAlgorithm},
		{"non-canonical ES384 header", coseDoc(nonCanonical, payload, sig), attest.ErrSignature},
		{"short signature", coseDoc(es384, payload, sig[:95]), attest.ErrMalformed},
		{"empty payload", coseDoc(es384, nil, sig), attest.ErrMalformed},
		{"three elements", append([]byte{0x83}, good[1:len(good)-len(sig)-2]...), attest.ErrMalformed},
		{"array payload", coseDoc(es384, mustCBOR(t, []int{1}), sig), attest.ErrMalformed},
		{"huge", make([]byte, attest.MaxDocumentSize+1), attest.ErrMalformed},
		{"bstr length beyond input", []byte{0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, attest.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(t, tc.doc, attest.VerifyOptions{Roots: emu.Roots()})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// testCA issues certificates for chains the emulator would not build.
type testCA struct {
	cert *x509.Certificate
	key  any
}

func issue(t *testing.T, parent *testCA, pub, key any, isCA bool, cn string) *testCA {
	t.Helper()
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: isCA,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	parentCert, signer := tmpl, key
	if parent != nil {
		parentCert, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func docWith(t *testing.T, leaf *testCA, bundle []*testCA, signer *ecdsa.PrivateKey) []byte {
	t.Helper()
	var ders [][]byte
	for _, c := range bundle {
		ders = append(ders, c.cert.Raw)
	}
	pairs := []kv{
		{"module_id", "i-test"}, {"digest", "SHA384"}, {"timestamp", uint64(time.Now().UnixMilli())},
		{"pcrs", map[int][]byte{0: make([]byte, 48)}}, {"certificate", leaf.cert.Raw}, {"cabundle", ders},
		{"public_key", nil}, {"user_data", nil}, {"nonce", nil},
	}
	payload := encodeMap(t, pairs, false)
	if signer == nil {
		return coseDoc(es384, payload, make([]byte, 96))
	}
	return signDoc(t, signer, payload)
}

// Chains with keys other than P-384 error cleanly (or verify, for RSA CAs
// over a P-384 leaf), never panic.
func TestVerifyKeyTypes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)

	ecRoot := issue(t, nil, p384.Public(), p384, true, "ec root")
	rsaRoot := issue(t, nil, rsaKey.Public(), rsaKey, true, "rsa root")
	for _, tc := range []struct {
		name   string
		root   *testCA
		leaf   *testCA
		signer *ecdsa.PrivateKey
		want   error
	}{
		{"P-384 leaf", ecRoot, issue(t, ecRoot, leafKey.Public(), leafKey, false, "leaf"), leafKey, nil},
		{"P-256 leaf", ecRoot, issue(t, ecRoot, p256.Public(), p256, false, "leaf"), nil, attest.ErrLeafKey},
		{"RSA leaf", rsaRoot, issue(t, rsaRoot, rsaKey.Public(), rsaKey, false, "leaf"), nil, attest.ErrLeafKey},
		{"RSA root, P-384 leaf", rsaRoot, issue(t, rsaRoot, leafKey.Public(), leafKey, false, "leaf"), leafKey, nil},
		{"RSA root, P-384 leaf, bad sig", rsaRoot, issue(t, rsaRoot, leafKey.Public(), leafKey, false, "leaf"), nil, attest.ErrSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots := x509.NewCertPool()
			roots.AddCert(tc.root.cert)
			doc := docWith(t, tc.leaf, []*testCA{tc.root}, tc.signer)
			_, err := verify(t, doc, attest.VerifyOptions{Roots: roots})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A cabundle with an extra, unused CA appended is rejected (the chain must
// use the cabundle in order), and must not be cached in a way that trusts
// the extra CA later.
func TestChainCacheNotPoisoned(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, bundle := emu.Certificates()
	evilKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	evilCA := issue(t, nil, evilKey.Public(), evilKey, true, "evil")
	bundle = append(bundle, evilCA.cert.Raw)
	pairs := set(fields(t, emu), "cabundle", bundle)
	doc, err := emu.Sign(encodeMap(t, set(pairs, "certificate", leaf), false))
	if err != nil {
		t.Fatal(err)
	}
	cache := attest.NewChainCache(4)
	opts := attest.VerifyOptions{Roots: emu.Roots(), ChainCache: cache}
	if _, err := verify(t, doc, opts); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("cabundle with an unused CA: %v, want ErrChain", err)
	}
	if cache.Len() != 0 {
		t.Fatalf("rejected chain cached: len %d", cache.Len())
	}
	forgedKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	forgedLeaf := issue(t, evilCA, forgedKey.Public(), forgedKey, false, "forged")
	forged := signDoc(t, forgedKey, encodeMap(t, set(pairs, "certificate", forgedLeaf.cert.Raw), false))
	if _, err := verify(t, forged, opts); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("forged leaf under appended CA: %v, want ErrChain", err)
	}
}

func TestChainCache(t *testing.T) {
	emu, n := newNSM(t, nsmtest.Options{})
	cache := attest.NewChainCache(2)
	opts := attest.VerifyOptions{Roots: emu.Roots(), ChainCache: cache}
	for i := range 3 {
		doc, err := n.Attest(t.Context(), attest.Request{Nonce: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify(t, doc, opts); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := cache.Stats(); hits != 2 || misses != 1 || cache.Len() != 1 {
		t.Fatalf("hits %d misses %d len %d", hits, misses, cache.Len())
	}
	// Another root pool never uses the entry.
	doc, _ := n.Attest(t.Context(), attest.Request{})
	if _, err := verify(t, doc, attest.VerifyOptions{Roots: x509.NewCertPool(), ChainCache: cache}); !errors.Is(err, attest.ErrRootNotPinned) {
		t.Fatalf("other pool: %v", err)
	}
	// Corpus documents fill the cache; LRU keeps the size bound.
	for _, d := range corpus(t, "valid") {
		if _, err := verify(t, d, attest.VerifyOptions{ChainCache: cache}); err != nil {
			t.Fatal(err)
		}
	}
	if cache.Len() != 2 {
		t.Fatalf("len %d, want 2", cache.Len())
	}
	cache.Purge()
	if cache.Len() != 0 {
		t.Fatal("purge")
	}
}

func TestParseUnverified(t *testing.T) {
	doc := readCorpus(t, sample)
	d, err := attest.ParseUnverified(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.ModuleID, "i-0809849710bf1b61b") || d.Timestamp.UnixMilli() != 1635440522077 || len(d.UserData) != 64 || len(d.Nonce) != 20 || d.PublicKey == nil || len(d.PublicKey) != 0 {
		t.Fatalf("%+v", d)
	}
	// The invalid document parses: only its signature is wrong.
	for _, bad := range corpus(t, "invalid") {
		if _, err := attest.ParseUnverified(bad); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := attest.ParseUnverified([]byte{0x80}); d != nil || !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("%v %v", d, err)
	}
}
