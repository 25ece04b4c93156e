package ingress

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

func TestRecordWatch(t *testing.T) {
	tests := []struct {
		name       string
		mode       framing
		chunks     [][]byte
		incomplete bool
		messages   uint64
		detected   framing
	}{
		{"auto TLS whole", framingUnknown, [][]byte{{22, 3, 1, 0, 2, 'a', 'b'}}, false, 1, framingTLS},
		{"auto TLS header split", framingUnknown, [][]byte{{22, 3}, {1, 0, 2}, {'a'}}, true, 0, framingTLS},
		{"auto frames two", framingUnknown, [][]byte{{0, 0, 0, 1, 'x', 0, 0}, {0, 0}}, false, 2, framingFrames},
		{"auto frames partial prefix", framingUnknown, [][]byte{{0, 0}}, true, 0, framingFrames},
		{"auto frames empty frame", framingUnknown, [][]byte{{0, 0, 0, 0}}, false, 1, framingFrames},
		{"auto unknown stream", framingUnknown, [][]byte{[]byte("hello")}, false, 0, framingNone},
		{"forced frames", framingFrames, [][]byte{{22, 0, 0}}, true, 0, framingFrames},
		{"none", framingNone, [][]byte{{0, 0}}, false, 0, framingNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &recordWatch{mode: tt.mode}
			now := time.Unix(1000, 0)
			for _, c := range tt.chunks {
				w.feed(c, now)
			}
			if w.incomplete.Load() != tt.incomplete || w.messages.Load() != tt.messages || w.mode != tt.detected {
				t.Errorf("incomplete %v messages %d mode %d; want %v %d %d", w.incomplete.Load(), w.messages.Load(), w.mode, tt.incomplete, tt.messages, tt.detected)
			}
			rd := w.rateDeadline(1000, 5*time.Second)
			if rd.IsZero() != !tt.incomplete {
				t.Errorf("rateDeadline %v with incomplete %v", rd, tt.incomplete)
			}
		})
	}
}

func TestSourceKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 1}, "198.51.100.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 1}, "198.51.100.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := sourceKey(tt.addr); got != tt.want {
			t.Errorf("sourceKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// memIngress runs an ingress inside a synctest bubble on an in-memory
// listener; every forwarded connection reaches an echo "enclave".
type memIngress struct {
	in   *Server
	ln   *testutil.ChanListener
	stop func()
}

func startMemIngress(t *testing.T, cfg Config) *memIngress {
	t.Helper()
	return startMemIngressTo(t, context.Background(), cfg, func(c net.Conn) { io.Copy(c, c) })
}

// startMemIngressTo is startMemIngress with Serve's context and the
// "enclave" given: enclave serves each forwarded connection (which is
// closed when it returns).
func startMemIngressTo(t *testing.T, ctx context.Context, cfg Config, enclave func(c net.Conn)) *memIngress {
	t.Helper()
	var echoes sync.WaitGroup
	cfg.Target = "tcp://enclave:1"
	cfg.Logger = quiet
	cfg.Dial = func(context.Context, string) (net.Conn, error) {
		a, b := net.Pipe()
		echoes.Go(func() {
			defer b.Close()
			enclave(b)
		})
		return a, nil
	}
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := testutil.NewChanListener()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Serve(ctx, ln) }()
	return &memIngress{in: in, ln: ln, stop: func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		echoes.Wait()
	}}
}

// dial connects a client from ip.
func (m *memIngress) dial(ip string) net.Conn {
	return m.ln.Dial(&net.TCPAddr{IP: net.ParseIP(ip), Port: 40000})
}

// echoOnce writes p and reads the echo; it reports success.
func echoOnce(c net.Conn, p []byte) bool {
	go c.Write(p)
	got := make([]byte, len(p))
	_, err := io.ReadFull(c, got)
	return err == nil && string(got) == string(p)
}

// TestMinRateSynctest: a client trickling an incomplete message is
// cut once it falls below MinRate after the grace; one that sent whole
// messages and waits, or is idle, is not.
func TestMinRateSynctest(t *testing.T) {
	tests := []struct {
		name string
		send func(c net.Conn) // runs in its own goroutine
		slow bool
	}{
		{"trickles a frame prefix", func(c net.Conn) {
			for _, b := range []byte{0, 0, 0} {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(4 * time.Second)
			}
		}, true},
		{"trickles a TLS record", func(c net.Conn) {
			c.Write([]byte{22, 3, 1, 0xff, 0xff})
			for {
				time.Sleep(time.Second)
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
			}
		}, true},
		{"whole frame then waits", func(c net.Conn) {
			c.Write([]byte{0, 0, 0, 2, 'h', 'i'})
		}, false},
		{"unknown stream trickles", func(c net.Conn) {
			for range 3 {
				if _, err := c.Write([]byte{'x'}); err != nil {
					return
				}
				time.Sleep(4 * time.Second)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := startMemIngress(t, Config{MinRate: 1024, MinRateGrace: 5 * time.Second, IdleTimeout: time.Minute})
				c := m.dial("198.51.100.1")
				go io.Copy(io.Discard, c) // the echo
				go tt.send(c)
				time.Sleep(30 * time.Second)
				synctest.Wait()
				st, ls := m.in.Stats(), m.in.LimitStats()
				if tt.slow != (ls.SlowConns == 1) || tt.slow != (st.OpenConns == 0) {
					t.Errorf("after 30s: %+v %+v; want slow %v", st, ls, tt.slow)
				}
				c.Close()
				m.stop()
			})
		})
	}
}

// TestEvictionSynctest: at MaxConns the connection idle or stalled
// the longest makes room for the newcomer; a source at MaxConnsPerSource
// displaces only its own connections, and only one idle for MinRateGrace,
// else its newcomer is refused.
func TestEvictionSynctest(t *testing.T) {
	type held struct {
		ip   string
		what string // "idle" (one echo), "stalled" (two bytes of a frame), "busy" (whole frame sent, no answer yet: the enclave is slow)
	}
	tests := []struct {
		name      string
		maxConns  int
		perSource int
		grace     time.Duration
		held      []held
		newcomer  string
		victim    int // -1: the newcomer is refused
	}{
		{"idle longest", 3, 0, time.Hour, []held{{"10.0.0.1", "idle"}, {"10.0.0.2", "idle"}, {"10.0.0.3", "idle"}}, "10.0.0.9", 0},
		{"stalled longest", 3, 0, time.Hour, []held{{"10.0.0.1", "stalled"}, {"10.0.0.2", "idle"}, {"10.0.0.3", "idle"}}, "10.0.0.9", 0},
		{"per source: own oldest", 10, 2, 2 * time.Second, []held{{"10.0.0.1", "idle"}, {"10.0.0.2", "idle"}, {"10.0.0.2", "idle"}}, "10.0.0.2", 1},
		{"per source: none idle long enough", 10, 2, 10 * time.Second, []held{{"10.0.0.1", "idle"}, {"10.0.0.2", "idle"}, {"10.0.0.2", "idle"}}, "10.0.0.2", -1},
		{"cap and source: own oldest", 3, 2, 2 * time.Second, []held{{"10.0.0.1", "idle"}, {"10.0.0.2", "idle"}, {"10.0.0.2", "idle"}}, "10.0.0.2", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := startMemIngress(t, Config{MaxConns: tt.maxConns, MaxConnsPerSource: tt.perSource, IdleTimeout: time.Hour, MinRateGrace: tt.grace})
				var conns []net.Conn
				for _, h := range tt.held {
					time.Sleep(time.Second)
					c := m.dial(h.ip)
					switch h.what {
					case "idle":
						if !echoOnce(c, []byte{0, 0, 0, 1, 'x'}) {
							t.Fatal("echo failed")
						}
					case "stalled":
						go c.Write([]byte{0, 0})
						go io.Copy(io.Discard, c)
					}
					synctest.Wait()
					conns = append(conns, c)
				}
				time.Sleep(time.Second)
				nc := m.dial(tt.newcomer)
				if tt.victim < 0 {
					synctest.Wait()
					if !testutil.ClosedNow(nc) {
						t.Fatal("newcomer over the per-source cap not refused")
					}
				} else if !echoOnce(nc, []byte{0, 0, 0, 1, 'n'}) {
					t.Fatal("newcomer not served")
				}
				synctest.Wait()
				for i, c := range conns {
					if tt.held[i].what == "stalled" {
						continue // its reader goroutine consumes the EOF
					}
					if got := testutil.ClosedNow(c); got != (i == tt.victim) {
						t.Errorf("held[%d] closed = %v, want %v", i, got, i == tt.victim)
					}
				}
				wantEvicted, wantRefused := uint64(1), uint64(0)
				if tt.victim < 0 {
					wantEvicted, wantRefused = 0, 1
				}
				if st, ls := m.in.Stats(), m.in.LimitStats(); ls.EvictedConns != wantEvicted || ls.SourceRejectedConns != wantRefused || st.RejectedConns != 0 {
					t.Errorf("stats %+v %+v; want %d evicted, %d refused by source", st, ls, wantEvicted, wantRefused)
				}
				for _, c := range conns {
					c.Close()
				}
				nc.Close()
				m.stop()
			})
		})
	}
}

// TestEvictionBusyLastSynctest: a connection that sent a whole message
// and awaits the answer (the enclave is slow) is evicted after one idle
// between messages, even if that one is younger.
func TestEvictionBusyLastSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The enclave answers a frame whose payload is 'b' never, any other
		// at once.
		m := startMemIngressTo(t, context.Background(), Config{MaxConns: 2, IdleTimeout: time.Hour}, func(c net.Conn) {
			frame := make([]byte, 5)
			for {
				if _, err := io.ReadFull(c, frame); err != nil {
					return
				}
				if frame[4] != 'b' {
					c.Write(frame)
				}
			}
		})
		busy := m.dial("10.0.0.1")
		go busy.Write([]byte{0, 0, 0, 1, 'b'})
		go io.Copy(io.Discard, busy)
		synctest.Wait()
		time.Sleep(time.Second)
		idle := m.dial("10.0.0.2")
		if !echoOnce(idle, []byte{0, 0, 0, 1, 'x'}) {
			t.Fatal("echo failed")
		}
		time.Sleep(time.Second)
		nc := m.dial("10.0.0.3")
		if !echoOnce(nc, []byte{0, 0, 0, 1, 'n'}) {
			t.Fatal("newcomer not served")
		}
		synctest.Wait()
		if !testutil.ClosedNow(idle) {
			t.Error("the idle connection was not evicted")
		}
		if ls := m.in.LimitStats(); ls.EvictedConns != 1 {
			t.Errorf("limit stats %+v, want 1 evicted", ls)
		}
		for _, c := range []net.Conn{busy, idle, nc} {
			c.Close()
		}
		m.stop()
	})
}

// FuzzRecordWatch feeds a client's untrusted bytes to the message watch:
// no panic, and the same bytes give the same framing, message count and
// state however the network splits them.
func FuzzRecordWatch(f *testing.F) {
	f.Add([]byte{22, 3, 1, 0, 2, 'a', 'b', 23, 3, 3, 0, 1}, uint16(3), uint8(framingUnknown))
	f.Add([]byte{0, 0, 0, 1, 'x', 0, 0, 0}, uint16(5), uint8(framingUnknown))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(2), uint8(framingFrames))
	f.Add([]byte("GET / HTTP/1.1\r\n"), uint16(1), uint8(framingUnknown))
	f.Fuzz(func(t *testing.T, data []byte, at uint16, mode uint8) {
		m := framing(mode % uint8(framingFrames+1))
		now := time.Unix(1000, 0)
		whole := &recordWatch{mode: m}
		whole.feed(data, now)
		split := &recordWatch{mode: m}
		k := int(at) % (len(data) + 1)
		split.feed(data[:k], now)
		split.feed(data[k:], now)
		if whole.mode != split.mode || whole.messages.Load() != split.messages.Load() ||
			whole.incomplete.Load() != split.incomplete.Load() || whole.remaining != split.remaining ||
			whole.hdrLen != split.hdrLen || whole.got != split.got {
			t.Fatalf("%x split at %d: mode %d/%d messages %d/%d incomplete %v/%v remaining %d/%d",
				data, k, whole.mode, split.mode, whole.messages.Load(), split.messages.Load(),
				whole.incomplete.Load(), split.incomplete.Load(), whole.remaining, split.remaining)
		}
		if whole.remaining < 0 || whole.got < 0 || whole.hdrLen > len(whole.hdr) {
			t.Fatalf("%x: remaining %d got %d hdrLen %d", data, whole.remaining, whole.got, whole.hdrLen)
		}
		if m != framingNone && whole.mode == framingNone && m != framingUnknown {
			t.Fatalf("forced framing %d became none", m)
		}
	})
}
