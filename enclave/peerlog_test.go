package enclave

import (
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
)

func TestPeerLimiter(t *testing.T) {
	var l peerLimiter
	t0 := time.Unix(1000, 0)
	allowed := 0
	for range 1000 {
		if ok, _ := l.allow(t0); ok {
			allowed++
		}
	}
	if allowed != peerLogBurst {
		t.Fatalf("a burst of 1000 at one instant let %d through, want %d", allowed, peerLogBurst)
	}
	// One second later, peerLogRate more; the first reports the rest.
	ok, suppressed := l.allow(t0.Add(time.Second))
	if !ok || suppressed != 1000-peerLogBurst {
		t.Fatalf("after a second: ok=%v suppressed=%d, want true and %d", ok, suppressed, 1000-peerLogBurst)
	}
	n := 1
	for {
		if ok, _ := l.allow(t0.Add(time.Second)); !ok {
			break
		}
		n++
	}
	if n != peerLogRate {
		t.Fatalf("%d allowed after one second, want %d", n, peerLogRate)
	}
}

// A peer sending junk as fast as it can cannot flood the log: the records
// it causes are rate-limited and counted, and its errors still come back.
func TestPeerCannotFloodLog(t *testing.T) {
	checkLeaks(t)
	var logs syncbuf.Buffer
	cfg := testConfig()
	cfg.Logger = newTextLogger(&logs)
	s, addr := startServer(t, cfg, nil)
	c := dial(t, addr)
	const n = 1000
	for i := range n {
		// A request for a method nobody handles: code 2, and one
		// "request failed" warning each without the limit.
		b, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: uint64(i + 1), Method: "nope"})
		if err := c.fw.WriteFrame(b); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		p, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		env, err := protocol.UnmarshalEnvelope(p)
		if err != nil || env.Code != protocol.CodeUnknownMethod {
			t.Fatalf("response %+v, %v; want unknown method", env, err)
		}
	}
	logged := strings.Count(logs.String(), "request failed")
	if logged > peerLogBurst+peerLogRate*5 { // generous: the test may take a few seconds
		t.Fatalf("%d warnings logged for %d bad requests: not rate-limited", logged, n)
	}
	if got := s.Stats().SuppressedLogs; got == 0 || int(got)+logged < n {
		t.Fatalf("SuppressedLogs = %d with %d logged, want them to add up to at least %d", got, logged, n)
	}
}
