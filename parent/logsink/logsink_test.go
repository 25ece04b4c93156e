package logsink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/testutil"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// capture is a slog.Handler that keeps records.
type capture struct {
	mu   sync.Mutex
	recs []slog.Record
	cond chan struct{} // signalled on every record
}

func newCapture() *capture { return &capture{cond: make(chan struct{}, 1)} }

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, r.Clone())
	c.mu.Unlock()
	select {
	case c.cond <- struct{}{}:
	default:
	}
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func (c *capture) records() []slog.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]slog.Record(nil), c.recs...)
}

// waitFor waits until n records arrived.
func (c *capture) waitFor(t testing.TB, n int) []slog.Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if r := c.records(); len(r) >= n {
			return r
		}
		select {
		case <-c.cond:
		case <-deadline:
			for _, r := range c.records() {
				t.Logf("record %q %v", r.Message, attrs(r))
			}
			t.Fatalf("got %d records, want %d", len(c.records()), n)
		}
	}
}

// attrs flattens a record's attributes to "key=value" (groups dotted).
func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(prefix+a.Key+".", g)
			}
			return
		}
		m[prefix+a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { add("", a); return true })
	return m
}

func startSink(t testing.TB, cfg Config) (*Sink, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunServer(t, ln, s.Serve)
	return s, transport.AddrOf(ln.Addr())
}

// TestRealEnclave streams records from the enclave package's log
// handler, restarts the enclave side, and streams again.
func TestRealEnclave(t *testing.T) {
	h := newCapture()
	_, addr := startSink(t, Config{Handler: h, Enclave: "enc-1"})
	for round := range 2 { // the second round is a restarted enclave
		eh, err := enclave.NewLogHandler(enclave.LogConfig{Addr: addr, Console: bytes.NewBuffer(nil), Level: slog.LevelDebug})
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(eh)
		log.Info("hello from the enclave", "round", round, slog.Group("req", "id", 7))
		log.Warn("line one\nINFO forged line\x1b[31m")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := eh.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		recs := h.waitFor(t, 2*(round+1))[2*round:]
		r0, r1 := recs[0], recs[1]
		a := attrs(r0)
		if r0.Message != "hello from the enclave" || r0.Level != slog.LevelInfo || a["enclave"] != "enc-1" ||
			a["attrs.round"] != string(rune('0'+round)) || a["attrs.req.id"] != "7" {
			t.Fatalf("round %d record %q %v %v", round, r0.Message, r0.Level, a)
		}
		if r1.Message != "line oneINFO forged line[31m" || r1.Level != slog.LevelWarn {
			t.Fatalf("round %d: control characters not stripped: %q", round, r1.Message)
		}
		if time.Since(r0.Time) > time.Minute {
			t.Fatalf("record time %v", r0.Time)
		}
	}
}

func sendLog(t testing.TB, c net.Conn, method string, rec any) {
	t.Helper()
	body, err := protocol.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: method, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(c, b, protocol.MaxFrameSizeLimit); err != nil {
		t.Fatal(err)
	}
}

func TestUntrusted(t *testing.T) {
	h := newCapture()
	s, addr := startSink(t, Config{Handler: h, MaxAttrs: 2, MaxMessage: 16, MaxValue: 8, MaxFrameSize: 4096})
	c, err := transport.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	many := make([]protocol.LogAttr, 10)
	for i := range many {
		many[i] = protocol.LogAttr{Key: "k\x00" + string(rune('a'+i)), Value: "v\u202e" + strings.Repeat("x", 20)}
	}
	sendLog(t, c, protocol.MethodLog, protocol.LogRecord{Level: 99, Message: "\x1b]0;title\x07" + strings.Repeat("é", 20), Attrs: many, Dropped: 3})
	sendLog(t, c, "not.a.log", protocol.LogRecord{Message: "ignored"})
	c.Write([]byte{0, 0, 0, 2, 0xff, 0xff}) // garbage frame: dropped
	sendLog(t, c, protocol.MethodLog, protocol.LogRecord{Level: -100, TimeUnixNano: 1e18, Message: "ok", Attrs: []protocol.LogAttr{{Key: "", Value: ""}}})
	recs := h.waitFor(t, 2)
	r := recs[0]
	a := attrs(r)
	if r.Level != maxLogLevel || len(r.Message) > 16 || !strings.HasPrefix(r.Message, "]0;title") || !strings.HasSuffix(r.Message, "…") {
		t.Fatalf("record 0: level %v message %q", r.Level, r.Message)
	}
	if a["enclave"] != "127.0.0.1" || a["enclave_dropped"] != "3" || a["enclave_attrs_truncated"] != "8" ||
		a["attrs.ka"] != "vxxxx…" || a["attrs.kb"] != "vxxxx…" || len(a) != 5 {
		t.Fatalf("record 0 attrs %v", a)
	}
	r = recs[1]
	if r.Level != minLogLevel || r.Message != "ok" || r.Time.UnixNano() != 1e18 || attrs(r)["attrs._"] != "" {
		t.Fatalf("record 1: %v %q %v %v", r.Level, r.Message, r.Time, attrs(r))
	}
	for s.Stats().BadFrames != 2 {
		time.Sleep(time.Millisecond)
	}
	// An oversized frame ends the connection; the enclave reconnects.
	c.Write([]byte{0, 0, 0x10, 0x01}) // 4097 bytes
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection survived an oversized frame: %v", err)
	}
	c2, err := transport.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sendLog(t, c2, protocol.MethodLog, protocol.LogRecord{Message: "back"})
	if recs := h.waitFor(t, 4); recs[3].Message != "back" {
		// Record 2 is the sink's own warning about the oversized frame.
		t.Fatalf("records after reconnect: %q, %q", recs[2].Message, recs[3].Message)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Listen: "vsock://any:5001", MaxAttrs: 1}, true},
		{Config{Listen: "nope"}, false},
		{Config{MaxFrameSize: -1}, false},
		{Config{MaxFrameSize: protocol.MaxFrameSizeLimit + 1}, false},
		{Config{MaxAttrs: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("Validate(%+v) = %v, want ok=%v (or ErrConfig)", tc.cfg, err, tc.ok)
		}
	}
}

func logFrame(t testing.TB, rec protocol.LogRecord) []byte {
	body, err := protocol.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 9, Method: protocol.MethodLog, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzRecord feeds untrusted frames to the decoder and the re-emitting
// path: no panic, and nothing with a control character reaches the handler.
func FuzzRecord(f *testing.F) {
	f.Add(logFrame(f, protocol.LogRecord{TimeUnixNano: 1, Level: 4, Message: "m\n", Attrs: []protocol.LogAttr{{Key: "k", Value: "v\x1b"}}, Dropped: 1}))
	f.Add(logFrame(f, protocol.LogRecord{Message: strings.Repeat("x", 5000)}))
	f.Add([]byte{0xa0})
	f.Add([]byte{})
	s, err := New(Config{Handler: slog.DiscardHandler, MaxAttrs: 4, MaxMessage: 64, MaxValue: 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		rec, err := DecodeRecord(frame)
		if err != nil {
			return
		}
		r := s.record(rec, slog.String("enclave", "x"))
		check := func(s string, max int) {
			if len(s) > max {
				t.Fatalf("%d bytes, limit %d", len(s), max)
			}
			for _, c := range s {
				if unicode.IsControl(c) || unicode.Is(unicode.Cf, c) {
					t.Fatalf("control character %U in %q", c, s)
				}
			}
		}
		check(r.Message, 64)
		n := 0
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == logAttrGroup {
				for _, g := range a.Value.Group() {
					n++
					check(g.Key, maxLogKey)
					check(g.Value.String(), 16)
				}
			}
			return true
		})
		if n > 4 {
			t.Fatalf("%d attrs kept, limit 4", n)
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	s, err := New(Config{Handler: slog.DiscardHandler})
	if err != nil {
		b.Fatal(err)
	}
	frame := logFrame(b, protocol.LogRecord{TimeUnixNano: 1, Message: "request served", Attrs: []protocol.LogAttr{{Key: "method", Value: "kms.decrypt"}, {Key: "ms", Value: "3"}}})
	self := slog.String("enclave", "16")
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		rec, err := DecodeRecord(frame)
		if err != nil {
			b.Fatal(err)
		}
		r := s.record(rec, self)
		_ = slog.DiscardHandler.Handle(context.Background(), r)
	}
}

// TestListenAndServe: ListenAndServe returns nil once ctx ended.
func TestListenAndServe(t *testing.T) {
	sink, err := New(Config{Listen: "tcp://127.0.0.1:0", Handler: slog.DiscardHandler})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sink.ListenAndServe(ctx) }()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("ListenAndServe = %v, want nil once ctx ended", err)
	}
}
