package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestRelaySlowReaderOnSockets: TestRelaySlowReader on real sockets,
// spliced and copied: a reader taking 1 KiB every 4 ms (250 kB/s) is never
// cut, though a whole splice or buffer takes it longer than Idle. The
// reader's connection has small buffers and an Internet-sized MSS, so that
// its kernel passes bytes on smoothly (not in loopback's 64 KiB segments)
// and holds little: it is the relay that waits for the reader. (Real
// time: the poller's deadlines do not run in a synctest bubble; nothing is
// timed, and Idle is far above the reader's pauses.)
func TestRelaySlowReaderOnSockets(t *testing.T) {
	const size = 512 << 10
	for _, observe := range []bool{false, true} {
		client, a := connPair(t, "tcp")
		b, server := smallMSSPair(t)
		b.(*net.TCPConn).SetWriteBuffer(16 << 10)
		server.(*net.TCPConn).SetReadBuffer(8 << 10)
		r := &Relay{Idle: 500 * time.Millisecond}
		if observe {
			r.Observe = func([]byte, time.Time) {}
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := r.Run(context.Background(), a, b)
			a.Close()
			b.Close()
			done <- err
		}()
		go func() {
			client.Write(make([]byte, size))
			client.(*net.TCPConn).CloseWrite()
		}()
		var got int
		buf := make([]byte, 1<<10)
		for {
			n, err := server.Read(buf)
			got += n
			if err != nil || got == size {
				break
			}
			time.Sleep(4 * time.Millisecond)
		}
		server.(*net.TCPConn).CloseWrite()
		if err := <-done; err != nil || got != size {
			t.Errorf("observe=%v: the slow reader got %d bytes of %d; Run: %v, want nil", observe, got, size, err)
		}
	}
}

// smallMSSPair is connPair("tcp") with a 1460-byte MSS.
func smallMSSPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1460) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return acceptPair(t, ln)
}

// TestRelayOutOfBand: a source peer that sends an out-of-band byte between
// others. The others pass, in order, and the out-of-band byte is dropped,
// as a read drops it; nor does the relay then wait inside a splice (holding
// a pipe, its counters and activity clock stopped) for a byte that the
// kernel counted as queued but a read skips: a Unix socket counts it.
func TestRelayOutOfBand(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		client, a := connPair(t, network)
		b, server := connPair(t, "tcp")
		io.WriteString(client, "hello")
		rc, err := client.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var oobErr error
		rc.Write(func(fd uintptr) bool {
			oobErr = unix.Sendto(int(fd), []byte("X"), unix.MSG_OOB, nil)
			return true
		})
		if oobErr != nil {
			t.Skipf("%s: cannot send out of band: %v", network, oobErr)
		}
		io.WriteString(client, "world")
		r := &Relay{Idle: time.Hour}
		done := make(chan error, 1)
		var ab int64
		go func() {
			var err error
			ab, _, err = r.Run(context.Background(), a, b)
			done <- err
		}()
		got := make([]byte, 10)
		if _, err := io.ReadFull(server, got); err != nil || string(got) != "helloworld" {
			t.Fatalf("%s: B got %q (%v), want %q", network, got, err, "helloworld")
		}
		var aToB time.Time
		for range 500 {
			if _, aToB, _ = r.Activity(); !aToB.IsZero() {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if aToB.IsZero() {
			t.Errorf("%s: the bytes passed but the relay never saw them read: it is waiting inside a splice", network)
		}
		client.(interface{ CloseWrite() error }).CloseWrite()
		server.(*net.TCPConn).CloseWrite()
		if rest, _ := io.ReadAll(server); len(rest) > 0 {
			t.Errorf("%s: B got %q more", network, rest)
		}
		if err := <-done; err != nil || ab != 10 {
			t.Errorf("%s: Run: %d bytes, %v; want 10, nil", network, ab, err)
		}
	}
}
