package enclave

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// rawEchoServer echoes frames over loopback TCP with no envelope decoding,
// handlers or deadlines: the floor the enclave server is compared against.
func rawEchoServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				fr, _ := protocol.NewFrameReader(nc, 0)
				fw, _ := protocol.NewFrameWriter(nc, 0)
				for {
					p, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if err := fw.WriteFrame(p); err != nil {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "tcp://" + ln.Addr().String()
}

// BenchmarkRoundTrip measures request/response round trips over loopback
// TCP through the enclave server ("server") and through a raw frame echo
// server ("rawtcp") in the same run. Each client is one connection with
// one request in flight; the request frame is encoded once, so the
// difference between the two is the server's own cost (decode, dispatch,
// handler goroutine, encode, deadlines).
func BenchmarkRoundTrip(b *testing.B) {
	for _, impl := range []string{"server", "rawtcp"} {
		for _, size := range []int{64, 4 << 10} {
			for _, clients := range []int{1, 64} {
				name := fmt.Sprintf("%s/body=%dB/clients=%d", impl, size, clients)
				b.Run(name, func(b *testing.B) {
					var addr string
					if impl == "rawtcp" {
						addr = rawEchoServer(b)
					} else {
						cfg := testConfig()
						cfg.MaxConns = clients + 1
						_, addr = startServer(b, cfg, nil)
					}
					benchRoundTrips(b, addr, size, clients)
				})
			}
		}
	}
}

func benchRoundTrips(b *testing.B, addr string, size, clients int) {
	body := bytes.Repeat([]byte{'x'}, size)
	req, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: "echo", Body: body})
	if err != nil {
		b.Fatal(err)
	}
	type conn struct {
		nc net.Conn
		fr *protocol.FrameReader
		fw *protocol.FrameWriter
	}
	cs := make([]conn, clients)
	for i := range cs {
		nc, err := transport.Dial(context.Background(), addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		fr, _ := protocol.NewFrameReader(nc, 0)
		fw, _ := protocol.NewFrameWriter(nc, 0)
		cs[i] = conn{nc, fr, fw}
		// Warm up and check the echo once.
		if err := fw.WriteFrame(req); err != nil {
			b.Fatal(err)
		}
		p, err := fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if env, err := protocol.UnmarshalEnvelope(p); err != nil || !bytes.Equal(env.Body, body) {
			b.Fatalf("bad echo: %v", err)
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for _, c := range cs {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := c.fw.WriteFrame(req); err != nil {
					failed.Store(err)
					return
				}
				if _, err := c.fr.ReadFrame(); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLogHandler measures the cost a log call adds on the server's
// path: flattening the record and queueing it for the sink (which here
// drops, as when the parent is away); the console is discarded.
func BenchmarkLogHandler(b *testing.B) {
	h, err := NewLogHandler(LogConfig{
		Console:   io.Discard,
		SinkQueue: 1,
		Dial: func(ctx context.Context, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		// The sink never answers: give up on the buffered record at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = h.Close(ctx)
	}()
	log := slog.New(h).With("conn", "127.0.0.1:1234")
	b.ReportAllocs()
	for b.Loop() {
		log.Info("request served", "method", "echo", "id", 42, "bytes", 64)
	}
}
