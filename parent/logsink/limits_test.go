package logsink

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/internal/testutil"
	"github.com/enclavekit/enclavekit/protocol"
)

// fakeVsockAddr is a vsock peer address for tests (no vsock needed).
type fakeVsockAddr string

func (fakeVsockAddr) Network() string  { return "vsock" }
func (a fakeVsockAddr) String() string { return string(a) }

func TestPeerKey(t *testing.T) {
	tests := []struct {
		name  string
		allow []uint32
		addr  net.Addr
		key   string
		ok    bool
	}{
		{"enclave CID", nil, fakeVsockAddr("16:1234"), "cid:16", true},
		{"parent CID", nil, fakeVsockAddr("3:1234"), "cid:3", false},
		{"host CID", nil, fakeVsockAddr("2:1234"), "cid:2", false},
		{"listed CID", []uint32{16, 20}, fakeVsockAddr("20:1"), "cid:20", true},
		{"unlisted CID", []uint32{16}, fakeVsockAddr("17:1"), "cid:17", false},
		{"loopback TCP", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, "127.0.0.1", true},
		{"loopback TCP6", nil, &net.TCPAddr{IP: net.IPv6loopback, Port: 9}, "::1", true},
		{"remote TCP", nil, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}, "192.0.2.1", false},
		{"no address", nil, nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{AllowCIDs: tt.allow})
			if err != nil {
				t.Fatal(err)
			}
			if key, ok := s.peerKey(tt.addr); key != tt.key || ok != tt.ok {
				t.Errorf("peerKey(%v) = %q, %v; want %q, %v", tt.addr, key, ok, tt.key, tt.ok)
			}
		})
	}
	for _, bad := range []uint32{3, 0, 2} {
		if err := (Config{AllowCIDs: []uint32{16, bad}}).Validate(); err == nil {
			t.Errorf("Validate accepted AllowCIDs with %d", bad)
		}
	}
}

// memSink runs a log sink on an in-memory listener inside a bubble.
func memSink(t *testing.T, cfg Config) (*Sink, *testutil.ChanListener, func()) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := testutil.NewChanListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	return s, ln, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

// TestLimitsSynctest: the parent's own CID is refused; at MaxConns
// and at MaxConnsPerCID a newcomer is served and the connection idle the
// longest (of its own enclave, at the per-CID cap) is closed.
func TestLimitsSynctest(t *testing.T) {
	tests := []struct {
		name      string
		maxConns  int
		held      []string // CIDs, connecting one second apart, each sending a record
		newcomer  string
		victim    int // -1: none
		refused   bool
		wantConns uint64
	}{
		{"parent CID refused", 8, []string{"16"}, "3", -1, true, 1},
		{"cap: idlest goes", 2, []string{"16", "17"}, "18", 0, false, 3},
		{"per CID: own idlest goes", 8, []string{"16", "17", "16"}, "16", 0, false, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newCapture()
				s, ln, stop := memSink(t, Config{Handler: h, MaxConns: tt.maxConns})
				var conns []net.Conn
				for i, cid := range tt.held {
					time.Sleep(time.Second)
					c := ln.Dial(fakeVsockAddr(cid + ":1000"))
					sendLog(t, c, protocol.MethodLog, protocol.LogRecord{Message: "held", TimeUnixNano: int64(i + 1)})
					synctest.Wait()
					conns = append(conns, c)
				}
				time.Sleep(time.Second)
				nc := ln.Dial(fakeVsockAddr(tt.newcomer + ":1000"))
				synctest.Wait()
				if tt.refused {
					if !testutil.ClosedNow(nc) {
						t.Fatal("connection from the parent's CID not closed")
					}
				} else {
					sendLog(t, nc, protocol.MethodLog, protocol.LogRecord{Message: "newcomer"})
					synctest.Wait()
					recs := h.records()
					if recs[len(recs)-1].Message != "newcomer" {
						t.Fatalf("newcomer's record not emitted: last %q", recs[len(recs)-1].Message)
					}
				}
				for i, c := range conns {
					if got := testutil.ClosedNow(c); got != (i == tt.victim) {
						t.Errorf("held[%d] (CID %s) closed = %v, want %v", i, tt.held[i], got, i == tt.victim)
					}
				}
				st := s.Stats()
				wantEvicted := uint64(0)
				if tt.victim >= 0 {
					wantEvicted = 1
				}
				wantRefused := uint64(0)
				if tt.refused {
					wantRefused = 1
				}
				if st.EvictedConns != wantEvicted || st.RefusedConns != wantRefused || st.TotalConns != tt.wantConns {
					t.Errorf("stats %+v; want evicted %d refused %d conns %d", st, wantEvicted, wantRefused, tt.wantConns)
				}
				for _, r := range h.records() {
					if r.Message == "held" {
						if a := attrs(r); a["received"] == "" || r.Time.UnixNano() > 10 {
							t.Errorf("record time %v attrs %v: want the enclave's time and the receive time", r.Time, a)
						}
					}
				}
				for _, c := range conns {
					c.Close()
				}
				nc.Close()
				stop()
			})
		})
	}
}

// TestMaxConns: a connection beyond MaxConns is closed at once and
// the slot frees when a served connection ends.
func TestMaxConns(t *testing.T) {
	h := newCapture()
	s, addr := startSink(t, Config{Handler: h, MaxConns: 1, RefuseAtCap: true}) // the old policy
	c1 := testutil.DialTCP(t, addr[len("tcp://"):])
	sendLog(t, c1, protocol.MethodLog, protocol.LogRecord{Message: "one"})
	h.waitFor(t, 1)
	c2 := testutil.DialTCP(t, addr[len("tcp://"):])
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second connection read %d, %v; want it closed", n, err)
	}
	c1.Close()
	// Once the first connection is gone, a new one is served.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c3 := testutil.DialTCP(t, addr[len("tcp://"):])
		sendLog(t, c3, protocol.MethodLog, protocol.LogRecord{Message: "three"})
		c3.CloseWrite()
		// A served connection is read to its end and closed by the sink
		// only after the record; a rejected one is closed unread.
		io.Copy(io.Discard, c3)
		if recs := h.records(); len(recs) >= 2 && recs[len(recs)-1].Message == "three" {
			if st := s.Stats(); st.TotalConns < 2 {
				t.Fatalf("stats %+v", st)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no connection served after the first one ended")
}

// A log stream whose enclave vanished without a reset must not lock a
// restarted enclave out: at the cap, the oldest connection is closed and the
// enclave's next attempt is served.
func TestEvictsOldestAtCap(t *testing.T) {
	h := newCapture()
	s, addr := startSink(t, Config{Handler: h, MaxConns: 1, RefuseAtCap: true}) // the old policy
	stale := testutil.DialTCP(t, addr[len("tcp://"):])
	sendLog(t, stale, protocol.MethodLog, protocol.LogRecord{Message: "before the restart"})
	h.waitFor(t, 1)

	// The restarted enclave's first attempt is refused, and the stale
	// connection is closed by the sink.
	first := testutil.DialTCP(t, addr[len("tcp://"):])
	io.Copy(io.Discard, first)
	stale.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := stale.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stale connection read %d, %v; want it closed by the sink", n, err)
	}
	// Its next attempt is served (the slot frees once the stale
	// connection's goroutine has ended).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c := testutil.DialTCP(t, addr[len("tcp://"):])
		sendLog(t, c, protocol.MethodLog, protocol.LogRecord{Message: "after the restart"})
		c.CloseWrite()
		io.Copy(io.Discard, c)
		if recs := h.records(); recs[len(recs)-1].Message == "after the restart" {
			if st := s.Stats(); st.EvictedConns < 1 {
				t.Fatalf("stats %+v: no eviction counted", st)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the restarted enclave was never served")
}
