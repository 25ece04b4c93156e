package parent

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}}

// BenchmarkCall measures round trips of CallRaw against a real
// enclave.Server (echo handler) on loopback TCP, from 1 and 64 goroutines.
// Compare with BenchmarkRawTCPEcho, the same bytes echoed with no protocol.
func BenchmarkCall(b *testing.B) {
	e := startEnclave(b, enclaveConfig("tcp://127.0.0.1:0"))
	c := dialT(b, e.addr, Options{PoolSize: 4})
	for _, size := range benchSizes {
		body := make([]byte, size.n)
		for _, g := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", size.name, g), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size.n))
				b.SetParallelism(max(1, g/benchProcs()))
				if g == 1 {
					for b.Loop() {
						if _, err := c.CallRaw(context.Background(), "echo", body); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.CallRaw(context.Background(), "echo", body); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkRawTCPEcho is the floor for BenchmarkCall: write n bytes to a
// loopback TCP echo server and read them back, no framing or CBOR. With 64
// goroutines each has its own connection.
func BenchmarkRawTCPEcho(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	testutil.Serve(b, ln, testutil.Echo)
	addr := ln.Addr().String()
	for _, size := range benchSizes {
		for _, g := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", size.name, g), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size.n))
				if g == 1 {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					buf := make([]byte, size.n)
					for b.Loop() {
						if _, err := c.Write(buf); err != nil {
							b.Fatal(err)
						}
						if _, err := io.ReadFull(c, buf); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(max(1, g/benchProcs()))
				b.RunParallel(func(pb *testing.PB) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					defer c.Close()
					buf := make([]byte, size.n)
					for pb.Next() {
						if _, err := c.Write(buf); err != nil {
							b.Error(err)
							return
						}
						if _, err := io.ReadFull(c, buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// benchProcs is GOMAXPROCS, which RunParallel multiplies by the parallelism.
func benchProcs() int { return testingProcs }

var testingProcs = runtime.GOMAXPROCS(0)
