package logsink_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Re-emit the enclave's log stream through the parent's slog handler. On
// a parent instance the sink listens on vsock://any:5001 and the enclave's
// enclave.NewLogHandler dials vsock://3:5001; here both ends are on
// loopback, and the enclave's side is one hand-made frame whose message
// tries to forge a second log line.
func ExampleNew() {
	// Text lines without the times, so that the output is the same on
	// every run.
	h := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "received" {
				return slog.Attr{}
			}
			return a
		},
	})
	sink, err := logsink.New(logsink.Config{Handler: h, Enclave: "signer"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		cancel()
		return
	}
	done := make(chan error, 1)
	go func() { done <- sink.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	// The enclave's side.
	c, err := transport.Dial(ctx, transport.AddrOf(ln.Addr()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	body, _ := protocol.Marshal(protocol.LogRecord{
		TimeUnixNano: time.Now().UnixNano(),
		Level:        int64(slog.LevelWarn),
		Message:      "disk full\nlevel=INFO msg=\"all fine\"",
		Attrs:        []protocol.LogAttr{{Key: "path", Value: "/var/data"}},
	})
	frame, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: protocol.MethodLog, Body: body})
	if err := protocol.WriteFrame(c, frame, protocol.MaxFrameSizeLimit); err != nil {
		fmt.Println(err)
		return
	}
	for sink.Stats().Records == 0 {
		time.Sleep(time.Millisecond)
	}
	// Output: level=WARN msg="disk fulllevel=INFO msg=\"all fine\"" enclave=signer attrs.path=/var/data
}
