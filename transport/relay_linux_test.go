package transport

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func spliceCount() int64 { return relaySplices.Load() }

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// TestRelayIdleHoldsNoPipeNorBuffer: relayed TCP-TCP connections that
// moved bytes both ways (spliced, and copied where Observe is set) and
// then went quiet hold no splice pipe and no buffer: the process's
// descriptors are the sockets alone, plus a few (the runtime's pipe pool).
// Go's own splice would keep a pipe (two descriptors) per direction
// waiting for bytes: four more per pair.
func TestRelayIdleHoldsNoPipeNorBuffer(t *testing.T) {
	const pairs = 100
	const slack = 16
	base := openFDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, pairs)
	splices := spliceCount()
	for i := range pairs {
		client, a := connPair(t, "tcp")
		b, server := connPair(t, "tcp")
		r := &Relay{Idle: time.Hour}
		if i%2 == 1 {
			r.Observe = func([]byte, time.Time) {}
		}
		go func() {
			_, _, err := r.Run(ctx, a, b)
			done <- err
		}()
		buf := make([]byte, 4)
		for _, p := range [][2]net.Conn{{client, server}, {server, client}} {
			if _, err := io.WriteString(p[0], "ping"); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(p[1], buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	if spliceCount() == splices {
		t.Fatal("nothing was spliced")
	}
	want := base + 4*pairs + slack
	var got int
	var held int64
	for range 500 { // the last relays put their pipe and buffer back just after the bytes arrive
		got, held = openFDs(t), relayBufsHeld.Load()
		if got <= want && held == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got > want {
		t.Errorf("%d idle relayed pairs: %d descriptors open, want at most %d (%d before, 4 sockets per pair, %d spare)", pairs, got, want, base, slack)
	}
	if held != 0 {
		t.Errorf("%d idle relayed pairs hold %d buffers, want 0", pairs, held)
	}
	cancel()
	for range pairs {
		<-done
	}
}
