package enclave

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// sinkRecord is one frame received by a test sink.
type sinkRecord struct {
	env protocol.Envelope
	rec protocol.LogRecord
}

// readSink reads log frames from nc until it fails, sending them to out.
func readSink(nc net.Conn, out chan<- sinkRecord) {
	fr, _ := protocol.NewFrameReader(nc, 0)
	for {
		p, err := fr.ReadFrame()
		if err != nil {
			return
		}
		env, err := protocol.UnmarshalEnvelope(p)
		if err != nil {
			return
		}
		var rec protocol.LogRecord
		if err := protocol.Unmarshal(env.Body, &rec); err != nil {
			return
		}
		out <- sinkRecord{env, rec}
	}
}

func TestLogConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  LogConfig
		ok   bool
	}{
		{"zero", LogConfig{}, true},
		{"tcp", LogConfig{Addr: "tcp://127.0.0.1:1"}, true},
		{"bad addr", LogConfig{Addr: "vsock://x"}, false},
		{"negative buffer", LogConfig{SinkQueue: -1}, false},
		{"negative timeout", LogConfig{WriteTimeout: -1}, false},
		{"min over max", LogConfig{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v", err)
			}
		})
	}
}

func TestLogHandlerStreams(t *testing.T) {
	checkLeaks(t)
	ln, err := transport.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan sinkRecord, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		readSink(nc, got)
	})

	var console syncbuf.Buffer
	h, err := NewLogHandler(LogConfig{Addr: transport.AddrOf(ln.Addr()), Console: &console, Level: slog.LevelDebug})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("svc", "kms").WithGroup("req")
	log.Info("hello", "id", 7, slog.Group("g", "a", 1), "key", protocol.NewSecret([]byte("s3cret")))
	log.Debug("second")

	want := []struct {
		msg   string
		level slog.Level
		attrs []protocol.LogAttr
	}{
		{"hello", slog.LevelInfo, []protocol.LogAttr{{Key: "svc", Value: "kms"}, {Key: "req.id", Value: "7"}, {Key: "req.g.a", Value: "1"}, {Key: "req.key", Value: protocol.Redacted}}},
		{"second", slog.LevelDebug, []protocol.LogAttr{{Key: "svc", Value: "kms"}}},
	}
	for i, w := range want {
		select {
		case r := <-got:
			if r.env.Method != protocol.MethodLog || r.env.ID != uint64(i+1) {
				t.Fatalf("envelope %+v; want method %s, id %d", r.env, protocol.MethodLog, i+1)
			}
			if r.rec.Message != w.msg || r.rec.Level != int64(w.level) || !slices.Equal(r.rec.Attrs, w.attrs) || r.rec.TimeUnixNano == 0 {
				t.Fatalf("record %+v; want %q %v %v", r.rec, w.msg, w.level, w.attrs)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no record reached the sink")
		}
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(console.String(), "msg=hello") || strings.Contains(console.String(), "s3cret") {
		t.Fatalf("console output:\n%s", console.String())
	}
	if h.Sent() != 2 || h.Dropped() != 0 {
		t.Fatalf("sent %d dropped %d", h.Sent(), h.Dropped())
	}
	log.Info("after close") // console only, counted as dropped
	if h.Dropped() != 1 {
		t.Fatalf("dropped %d after close, want 1", h.Dropped())
	}
}

// TestLogHandlerNeverBlocks: a sink that never reads does not slow logging.
func TestLogHandlerNeverBlocks(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		var peers []net.Conn
		var mu sync.Mutex
		h, err := NewLogHandler(LogConfig{
			Addr:      "tcp://127.0.0.1:1",
			Console:   io.Discard,
			SinkQueue: 64,
			Dial: func(context.Context, string) (net.Conn, error) {
				a, b := net.Pipe() // b is never read
				mu.Lock()
				peers = append(peers, b)
				mu.Unlock()
				return a, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(h)
		start := time.Now()
		for i := range 10000 {
			log.Info("flood", "i", i)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("logging waited %v for the sink", d)
		}
		if h.Dropped() < 10000-64-1 {
			t.Fatalf("dropped %d of 10000 with a 64-record buffer", h.Dropped())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		closeStart := time.Now()
		if err := h.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close = %v; want the deadline (records could not be delivered)", err)
		}
		if d := time.Since(closeStart); d != time.Second {
			t.Fatalf("Close took %v, want its context's 1s (not the 2s write timeout)", d)
		}
		mu.Lock()
		for _, p := range peers {
			p.Close()
		}
		mu.Unlock()
	})
}

// TestLogHandlerReconnect: the sender backs off exponentially while the
// sink is away, reports drops in the next record, and re-dials after the
// sink closes the connection.
func TestLogHandlerReconnect(t *testing.T) {
	checkLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		var (
			mu       sync.Mutex
			attempts []time.Duration
			sinks    []net.Conn
		)
		got := make(chan sinkRecord, 16)
		start := time.Now()
		h, err := NewLogHandler(LogConfig{
			Console:    io.Discard,
			SinkQueue:  1,
			MinBackoff: 100 * time.Millisecond,
			MaxBackoff: 300 * time.Millisecond,
			Dial: func(context.Context, string) (net.Conn, error) {
				mu.Lock()
				defer mu.Unlock()
				attempts = append(attempts, time.Since(start))
				if len(attempts) <= 3 {
					return nil, errors.New("connection refused")
				}
				a, b := net.Pipe()
				sinks = append(sinks, b)
				go readSink(b, got)
				return a, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(h)
		log.Info("one") // taken by the sender, which is dialing
		synctest.Wait()
		log.Info("two")   // fills the buffer
		log.Info("three") // dropped
		r1, r2 := <-got, <-got
		if r1.rec.Message != "one" || r1.rec.Dropped != 1 || r2.rec.Message != "two" || r2.rec.Dropped != 0 {
			t.Fatalf("records %+v, %+v; want one (dropped 1), two", r1.rec, r2.rec)
		}
		mu.Lock()
		wantAttempts := []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond}
		if !slices.Equal(attempts, wantAttempts) {
			t.Fatalf("dial attempts at %v; want %v", attempts, wantAttempts)
		}
		sinks[0].Close() // the sink goes away
		mu.Unlock()
		log.Info("four")
		r4 := <-got
		if r4.rec.Message != "four" || r4.env.ID != 3 {
			t.Fatalf("after reconnect: %+v %+v", r4.env, r4.rec)
		}
		mu.Lock()
		if len(sinks) != 2 {
			t.Fatalf("%d connections, want a re-dial", len(sinks))
		}
		mu.Unlock()
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		for _, s := range sinks {
			s.Close()
		}
		mu.Unlock()
	})
}
