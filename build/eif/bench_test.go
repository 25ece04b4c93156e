package eif

import (
	"crypto/sha512"
	"testing"
)

const benchSize = 32 << 20

func benchSections() (k, c []byte, r [][]byte, total int) {
	k = synth(1, 8<<20)
	c = []byte("console=ttyS0")
	r = [][]byte{synth(2, 4<<20), synth(3, benchSize-12<<20)}
	return k, c, r, len(k) + len(c) + len(r[0]) + len(r[1])
}

// BenchmarkMeasure computes PCR0..2 over a 32 MiB image; compare with
// BenchmarkSHA384, one SHA-384 pass over the same bytes.
func BenchmarkMeasure(b *testing.B) {
	k, c, r, n := benchSections()
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for b.Loop() {
		_ = Measure(k, c, r)
	}
}

func BenchmarkSHA384(b *testing.B) {
	k, c, r, n := benchSections()
	buf := make([]byte, 0, n)
	buf = append(append(append(append(buf, k...), c...), r[0]...), r[1]...)
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for b.Loop() {
		_ = sha512.Sum384(buf)
	}
}

func BenchmarkParse(b *testing.B) {
	k, c, r, _ := benchSections()
	img, _, err := Build(Spec{Kernel: k, Cmdline: string(c), Ramdisks: r, Metadata: []byte("{}")})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		if _, err := Parse(img); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	k, c, r, n := benchSections()
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for b.Loop() {
		if _, _, err := Build(Spec{Kernel: k, Cmdline: string(c), Ramdisks: r, Metadata: []byte("{}")}); err != nil {
			b.Fatal(err)
		}
	}
}
