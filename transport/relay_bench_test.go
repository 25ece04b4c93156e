package transport

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkRelayStream streams 1 MiB writes from a client through a
// relayed TCP pair to a sink: "relay" is Relay (spliced), "relay-copy"
// Relay reading through its buffers (an Observe hook forces it, as a vsock
// source would), "io.Copy" Go's own splice (which holds a pipe while it
// waits), as a reference.
func BenchmarkRelayStream(b *testing.B) {
	for _, name := range []string{"relay", "relay-copy", "io.Copy"} {
		b.Run(name, func(b *testing.B) {
			client, a := connPair(b, "tcp")
			bb, server := connPair(b, "tcp")
			done := make(chan int64, 1)
			go func() {
				buf := make([]byte, 256<<10)
				var n int64
				for {
					m, err := server.Read(buf)
					n += int64(m)
					if err != nil {
						done <- n
						return
					}
				}
			}()
			splices := spliceCount()
			switch name {
			case "relay":
				go (&Relay{Idle: time.Minute, CountAToB: func(int64) {}}).Run(context.Background(), a, bb)
			case "relay-copy":
				go (&Relay{Idle: time.Minute, CountAToB: func(int64) {}, Observe: func([]byte, time.Time) {}}).Run(context.Background(), a, bb)
			default:
				go func() { io.Copy(bb, a); bb.(*net.TCPConn).CloseWrite() }()
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			client.(*net.TCPConn).CloseWrite()
			<-done
			if n := spliceCount() - splices; n > 0 {
				b.ReportMetric(float64(int64(b.N)*int64(len(buf))/n)/1024, "KiB/splice")
			}
		})
	}
}
