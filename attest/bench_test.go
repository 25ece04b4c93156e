package attest_test

import (
	"testing"

	"github.com/enclavekit/enclavekit/attest"
)

// BenchmarkVerify reports documents verified per second, cold (every chain
// verified from scratch) and with the chain cache warm.
func BenchmarkVerify(b *testing.B) {
	doc := readCorpus(b, sample)
	for _, bc := range []struct {
		name string
		opts attest.VerifyOptions
	}{
		{"cold", attest.VerifyOptions{DisableChainCache: true}},
		{"cached", attest.VerifyOptions{ChainCache: attest.NewChainCache(16)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := attest.Verify(doc, bc.opts); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if _, err := attest.Verify(doc, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
		})
	}
}

func BenchmarkParseUnverified(b *testing.B) {
	doc := readCorpus(b, sample)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := attest.ParseUnverified(doc); err != nil {
			b.Fatal(err)
		}
	}
}
