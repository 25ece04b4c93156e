package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/enclavekit/enclavekit/attest"
)

// attestDoc is a real AWS document from the attest corpus.
const attestDoc = "../attest/testdata/valid/hf_nitrite_test_hex_attestation_doc.cbor"

// benchAttest measures documents verified per second on one goroutine,
// cold (no chain cache: every signature verified) and cached.
func benchAttest(rounds int, sample time.Duration) []section {
	doc, err := os.ReadFile(filepath.FromSlash(attestDoc))
	if err != nil {
		fatal(err)
	}
	peers := []string{"enclavekit cold", "enclavekit cached"}
	sec := section{
		ID: "attest", Title: "Attestation: documents verified per second, one goroutine", Unit: "docs/s",
		HigherBetter: true, Reference: "enclavekit cold",
		Note: "Cold verifies the chain (4 links) and the COSE signature: five P-384 ECDSA verifications, which are " +
			"about 95% of its time. Cached skips the cabundle verified before and a known leaf: one verification. " +
			"hf/nitrite and blocky/nitrite are not measured: the Go module proxy refused both (403, not available), " +
			"and their code is not copied here. Figures from other runs (the issue's among them) are not comparable with these: " +
			"compare within this table only.",
	}
	opts := map[string]attest.VerifyOptions{
		"enclavekit cold":   {DisableChainCache: true},
		"enclavekit cached": {ChainCache: attest.NewChainCache(16)},
	}
	s, err := measure(sec, peers, rounds, func(peer string) (float64, error) {
		o := opts[peer]
		n := 0
		start := time.Now()
		for time.Since(start) < sample {
			if _, err := attest.Verify(doc, o); err != nil {
				return 0, err
			}
			n++
		}
		return float64(n) / time.Since(start).Seconds(), nil
	})
	if err != nil {
		fatal(err)
	}
	return []section{s}
}
