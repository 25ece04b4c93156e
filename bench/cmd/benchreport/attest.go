package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/enclavekit/enclavekit/attest"
)

// attestDoc is a real AWS document from the attest corpus.
const attestDoc = "../attest/testdata/valid/hf_nitrite_test_hex_attestation_doc.cbor"

// Peer names of the attestation section.
const (
	peerStd    = "stdlib x509.Verify + COSE"
	peerCold   = "enclavekit cold"
	peerCached = "enclavekit cached"
	peerFloor  = "5 × P-384 verify alone"
)

// attestPeer is one way of verifying the benchmark document. p384 is the
// number of P-384 ECDSA verifications it performs per document in steady
// state (TestP384VerificationsPerDocument counts them in an instrumented
// build and fails when a figure here is wrong).
type attestPeer struct {
	name   string
	p384   int
	verify func() error
}

// attestPeers returns the verifiers the report compares on doc, in the
// order of its table.
func attestPeers(doc []byte) ([]attestPeer, error) {
	roots := attest.AWSRoots()
	cache := attest.NewChainCache(16)
	floor, err := p384Floor(doc, 5)
	if err != nil {
		return nil, err
	}
	verifyWith := func(o attest.VerifyOptions) func() error {
		return func() error { _, err := attest.Verify(doc, o); return err }
	}
	return []attestPeer{
		// The root is in the intermediates pool as well as in Roots, so
		// x509.Verify checks the first intermediate's signature twice: once
		// with the root from Roots, once with its copy from the pool.
		{peerStd, 6, func() error { return stdVerify(doc, roots) }},
		{peerCold, 5, verifyWith(attest.VerifyOptions{DisableChainCache: true})},
		{peerCached, 1, verifyWith(attest.VerifyOptions{ChainCache: cache})},
		{peerFloor, 5, floor},
	}, nil
}

// p384Floor returns a function that performs n P-384 ECDSA verifications
// through crypto/ecdsa.Verify and nothing else: the signing certificate's
// own signature (ECDSA-SHA384 by the last cabundle certificate over its TBS
// bytes). Per call it costs what n verifications cost, the floor of any
// verifier that does n of them.
func p384Floor(doc []byte, n int) (func() error, error) {
	d, err := attest.Verify(doc, attest.VerifyOptions{DisableChainCache: true})
	if err != nil {
		return nil, err
	}
	if d.Certificate.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		return nil, fmt.Errorf("benchmark document: certificate signed with %v, want ECDSA-SHA384", d.Certificate.SignatureAlgorithm)
	}
	pub, ok := d.CABundle[len(d.CABundle)-1].PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return nil, fmt.Errorf("benchmark document: the certificate's issuer key is not P-384")
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(d.Certificate.Signature, &sig); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("benchmark document: certificate signature is not an ASN.1 ECDSA signature")
	}
	digest := sha512.Sum384(d.Certificate.RawTBSCertificate)
	return func() error {
		for range n {
			if !ecdsa.Verify(pub, digest[:], sig.R, sig.S) {
				return fmt.Errorf("benchmark document: certificate signature does not verify")
			}
		}
		return nil
	}, nil
}

// benchAttest measures documents verified per second on one goroutine:
// the standard-library method of the nitrite libraries, enclavekit cold (no
// chain cache: every signature verified) and cached, and the floor of five
// bare P-384 verifications.
func benchAttest(rounds int, sample time.Duration, r *report) []section {
	doc, err := os.ReadFile(filepath.FromSlash(attestDoc))
	if err != nil {
		fatal(err)
	}
	peers, err := attestPeers(doc)
	if err != nil {
		fatal(err)
	}
	r.Machine.Peers = append(r.Machine.Peers, peerStd+": the method hf/nitrite and blocky/nitrite use, written here with "+
		"crypto/x509 and crypto/ecdsa of Go "+runtime.Version()+" and github.com/fxamacker/cbor/v2 "+
		moduleVersion("github.com/fxamacker/cbor/v2")+" (nitrite itself is not served by the Go module proxy here: 403)")
	names := make([]string, len(peers))
	byName := make(map[string]attestPeer, len(peers))
	for i, p := range peers {
		names[i] = p.name
		byName[p.name] = p
	}
	sec := section{
		ID: "attest", Title: "Attestation: documents verified per second, one goroutine", Unit: "docs/s",
		HigherBetter: true, Reference: peerStd,
	}
	s, err := measure(sec, names, rounds, func(peer string) (float64, error) {
		f := byName[peer].verify
		n := 0
		start := time.Now()
		for time.Since(start) < sample {
			if err := f(); err != nil {
				return 0, fmt.Errorf("%s: %w", peer, err)
			}
			n++
		}
		return float64(n) / time.Since(start).Seconds(), nil
	})
	if err != nil {
		fatal(err)
	}
	for i := range s.Rows {
		s.Rows[i].Extra = fmt.Sprintf("%d P-384 verifications per document", byName[s.Rows[i].Peer].p384)
		if byName[s.Rows[i].Peer].p384 == 1 {
			s.Rows[i].Extra = "1 P-384 verification per document"
		}
	}
	s.Note = attestNote(s)
	return []section{s}
}

// attestNote explains the table with this run's figures: what each row
// does, the measured ratio of cold to the standard-library method, and the
// bound that the cost of one P-384 verification puts on the cold path.
func attestNote(s section) string {
	var floor, cold row
	for _, rw := range s.Rows {
		switch rw.Peer {
		case peerFloor:
			floor = rw
		case peerCold:
			cold = rw
		}
	}
	perVerify := 1e6 / (5 * floor.Values.median()) // µs
	// Cold over the floor, round by round.
	var ofBound series
	for k := range min(len(cold.Values), len(floor.Values)) {
		if floor.Values[k] > 0 {
			ofBound = append(ofBound, cold.Values[k]/floor.Values[k])
		}
	}
	return fmt.Sprintf("%s is the method hf/nitrite and blocky/nitrite use (COSE_Sign1 decode, every cabundle certificate parsed "+
		"into the intermediates pool of crypto/x509 Verify with the pinned root, then the COSE signature with crypto/ecdsa), "+
		"written for this report with the standard library and fxamacker/cbor: neither nitrite is served by the Go module proxy "+
		"here (403), so neither is measured itself, and their code is not copied. "+
		"Cold verifies the chain (4 links; the pinned root's self-signature is not re-checked) and the COSE signature: five P-384 "+
		"ECDSA verifications. The stdlib method does six: the root sits in its intermediates pool as well as in Roots, and x509 "+
		"checks the first intermediate against each copy. Cached skips the cabundle verified before and a known leaf: one verification. "+
		"The last row makes five crypto/ecdsa.Verify calls on P-384 and nothing else. "+
		"In this run one P-384 verification took %.0f µs, so five bound any cold verifier at %s docs/s; enclavekit cold ran at "+
		"%.0f%% of that bound and at %s the stdlib method (medians of same-round ratios). "+
		"The issue asks 1.5×: at the same cost per verification that leaves a cold verifier 6 / 1.5 = 4 verifications per document, "+
		"one fewer than a chain of four links plus the COSE signature, so it would have to leave a certificate or the signature "+
		"unchecked. Cold does not; six against five puts it near 1.2×, and only the cache (1 verification) goes beyond. "+
		"The counts are checked by TestP384VerificationsPerDocument (bench/cmd/benchreport). "+
		"Figures from other runs (the issue's among them) are not comparable with these: compare within this table only.",
		peerStd, perVerify, num(floor.Values.median()), 100*ofBound.median(), ratioText(cold))
}

// ratioText is a row's median ratio to the reference, e.g. "1.21×".
func ratioText(rw row) string {
	if len(rw.Ratios) == 0 {
		return "— (not measured)"
	}
	return fmt.Sprintf("%.2f×", rw.Ratios.median())
}
