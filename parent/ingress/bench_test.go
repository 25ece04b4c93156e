package ingress

import (
	"io"
	"net"
	"testing"
)

// BenchmarkThroughput measures bulk throughput through the ingress
// (client → ingress → backend that discards).
func BenchmarkThroughput(b *testing.B) {
	target := backend(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	_, addr := startIngress(b, Config{Target: target})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 256<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
