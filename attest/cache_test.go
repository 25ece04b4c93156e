package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
)

// certSpec describes a certificate for the cache tests, which need chains
// and leaves the emulator never issues.
type certSpec struct {
	cn                  string
	isCA                bool
	notBefore, notAfter time.Time
	dnsNames            []string
	permittedDNS        []string
	critical            bool // add an unknown critical extension
	issuerName          *pkix.Name
}

// mint issues a certificate for key under parent (nil: self-signed).
func mint(t *testing.T, parent *testCA, key *ecdsa.PrivateKey, s certSpec) *testCA {
	t.Helper()
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: s.cn},
		NotBefore: s.notBefore, NotAfter: s.notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: s.isCA,
		DNSNames: s.dnsNames, PermittedDNSDomains: s.permittedDNS,
	}
	if s.isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if s.critical {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}}}
	}
	parentCert, signer := tmpl, key
	if parent != nil {
		parentCert, signer = parent.cert, parent.key.(*ecdsa.PrivateKey)
	}
	if s.issuerName != nil {
		// Same signing key, another issuer name.
		pc := *parentCert
		pc.RawSubject, pc.Subject = nil, *s.issuerName
		parentCert = &pc
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func p384(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// docAt is docWith at a chosen timestamp.
func docAt(t *testing.T, leaf *testCA, bundle []*testCA, at time.Time) []byte {
	t.Helper()
	var ders [][]byte
	for _, c := range bundle {
		ders = append(ders, c.cert.Raw)
	}
	pairs := []kv{
		{"module_id", "i-test"}, {"digest", "SHA384"}, {"timestamp", uint64(at.UnixMilli())},
		{"pcrs", map[int][]byte{0: make([]byte, 48)}}, {"certificate", leaf.cert.Raw}, {"cabundle", ders},
		{"public_key", nil}, {"user_data", nil}, {"nonce", nil},
	}
	return signDoc(t, leaf.key.(*ecdsa.PrivateKey), encodeMap(t, pairs, false))
}

// Once a cabundle is cached, only the leaf's link is checked: that check
// must reject everything a full verification rejects. Each case first
// verifies a genuine document to fill the cache, then checks that the
// second document is rejected both from scratch and through the cache.
func TestChainCacheLeafChecks(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	h := time.Hour
	rootKey, interKey := p384(t), p384(t)
	root := mint(t, nil, rootKey, certSpec{cn: "root", isCA: true, notBefore: now.Add(-100 * h), notAfter: now.Add(100 * h)})
	// The intermediate's window is narrower than the root's on both sides.
	inter := mint(t, root, interKey, certSpec{cn: "inter", isCA: true, notBefore: now.Add(-10 * h), notAfter: now.Add(10 * h)})
	bundle := []*testCA{root, inter}
	wide := certSpec{cn: "leaf", notBefore: now.Add(-50 * h), notAfter: now.Add(50 * h)}
	genuine := mint(t, inter, p384(t), wide)

	// Same subject as inter, another key, also issued by root.
	twin := mint(t, root, p384(t), certSpec{cn: "inter", isCA: true, notBefore: now.Add(-10 * h), notAfter: now.Add(10 * h)})
	// A leaf carrying inter's issuer name but signed by an attacker key.
	fakeParent := &testCA{cert: &x509.Certificate{Subject: inter.cert.Subject, RawSubject: inter.cert.RawSubject,
		SubjectKeyId: inter.cert.SubjectKeyId, BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}, key: p384(t)}
	fakeParent.cert.PublicKey = fakeParent.key.(*ecdsa.PrivateKey).Public()
	forged := mint(t, fakeParent, p384(t), wide)
	otherName := pkix.Name{CommonName: "not inter"}

	for _, tc := range []struct {
		name string
		doc  []byte
	}{
		{"leaf signed by an attacker key under inter's name", docAt(t, forged, bundle, now)},
		{"leaf issued by inter's key under another name", docAt(t, mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(-h), notAfter: now.Add(h), issuerName: &otherName}), bundle, now)},
		{"leaf expired at the document time", docAt(t, mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(-h), notAfter: now.Add(h)}), bundle, now.Add(2*h))},
		{"leaf not yet valid at the document time", docAt(t, mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(h), notAfter: now.Add(2 * h)}), bundle, now)},
		{"leaf with an unknown critical extension", docAt(t, mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(-h), notAfter: now.Add(h), critical: true}), bundle, now)},
		{"intermediate expired at the document time", docAt(t, genuine, bundle, now.Add(20*h))},
		{"intermediate not yet valid at the document time", docAt(t, genuine, bundle, now.Add(-20*h))},
		{"same subjects, other intermediate", docAt(t, genuine, []*testCA{root, twin}, now)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots := x509.NewCertPool()
			roots.AddCert(root.cert)
			if _, err := verify(t, tc.doc, attest.VerifyOptions{Roots: roots, DisableChainCache: true}); !errors.Is(err, attest.ErrChain) {
				t.Fatalf("uncached: %v, want ErrChain", err)
			}
			cache := attest.NewChainCache(4)
			opts := attest.VerifyOptions{Roots: roots, ChainCache: cache}
			if _, err := verify(t, docAt(t, genuine, bundle, now), opts); err != nil {
				t.Fatal(err)
			}
			if cache.Len() != 1 {
				t.Fatalf("genuine chain not cached")
			}
			if _, err := verify(t, tc.doc, opts); !errors.Is(err, attest.ErrChain) {
				t.Fatalf("cached: %v, want ErrChain", err)
			}
			// The genuine leaf, known to the cache, still verifies.
			if _, err := verify(t, docAt(t, genuine, bundle, now.Add(time.Minute)), opts); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Sanity: the cache is used (hits) for the genuine chain.
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	cache := attest.NewChainCache(4)
	for i := range 3 {
		other := mint(t, inter, p384(t), wide)
		if _, err := verify(t, docAt(t, other, bundle, now.Add(time.Duration(i)*time.Second)), attest.VerifyOptions{Roots: roots, ChainCache: cache}); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := cache.Stats(); hits != 2 || misses != 1 {
		t.Fatalf("hits %d misses %d", hits, misses)
	}
}

// A CA with name constraints constrains every leaf below it, so its chain
// is never cached: a second leaf outside the constraint is rejected.
func TestChainCacheNameConstraints(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	h := time.Hour
	rootKey, interKey := p384(t), p384(t)
	root := mint(t, nil, rootKey, certSpec{cn: "root", isCA: true, notBefore: now.Add(-h), notAfter: now.Add(h)})
	inter := mint(t, root, interKey, certSpec{cn: "inter", isCA: true, notBefore: now.Add(-h), notAfter: now.Add(h), permittedDNS: []string{"example.com"}})
	bundle := []*testCA{root, inter}
	inside := mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(-h), notAfter: now.Add(h), dnsNames: []string{"a.example.com"}})
	outside := mint(t, inter, p384(t), certSpec{cn: "leaf", notBefore: now.Add(-h), notAfter: now.Add(h), dnsNames: []string{"evil.org"}})
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	cache := attest.NewChainCache(4)
	opts := attest.VerifyOptions{Roots: roots, ChainCache: cache}
	if _, err := verify(t, docAt(t, inside, bundle, now), opts); err != nil {
		t.Fatal(err)
	}
	if cache.Len() != 0 {
		t.Fatal("name-constrained chain cached")
	}
	if _, err := verify(t, docAt(t, outside, bundle, now), opts); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("leaf outside the name constraint: %v, want ErrChain", err)
	}
}
