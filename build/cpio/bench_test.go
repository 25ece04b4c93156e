package cpio

import "testing"

func benchApp() App {
	bin := make([]byte, 8<<20)
	for i := range bin {
		bin[i] = byte(i * 31)
	}
	return App{Binary: bin}
}

func BenchmarkApplication(b *testing.B) {
	a := benchApp()
	b.ReportAllocs()
	b.SetBytes(int64(len(a.Binary)))
	for b.Loop() {
		if _, err := Application(a, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	a := benchApp()
	arc, err := Application(a, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(arc)))
	for b.Loop() {
		if _, _, err := Read(arc); err != nil {
			b.Fatal(err)
		}
	}
}
