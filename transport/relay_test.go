package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// connPair returns two connected conns of network ("tcp" on loopback,
// "unix" in a temporary directory: the dialed one, then the accepted one;
// or "pipe", net.Pipe), closed at the end of the test.
func connPair(t testing.TB, network string) (net.Conn, net.Conn) {
	t.Helper()
	if network == "pipe" { // net.Pipe: no descriptor, no half close; works in a synctest bubble
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return acceptPair(t, ln)
}

// acceptPair dials ln once and returns the dialed conn and the accepted
// one, both closed at the end of the test; it closes ln.
func acceptPair(t testing.TB, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

// wrapped hides a conn's type (as TLS or a vsock conn in a test would),
// keeping CloseWrite.
type wrapped struct{ net.Conn }

func (w wrapped) CloseWrite() error { return w.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// sendRecv writes n pseudo-random bytes to c then half-closes it, while
// reading c to EOF; it returns the SHA-256 of what it sent and received.
func sendRecv(c net.Conn, seed uint64, n int64) (sent, got [32]byte, gotN int64, err error) {
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		h := sha256.New()
		pattern := make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{byte(seed)}).Read(pattern)
		r := rand.New(rand.NewPCG(seed, seed))
		for i := uint64(0); n > 0; i++ {
			// Chunks of random sizes, each stamped with its number, so
			// that lost, repeated or reordered bytes change the hash.
			off := r.IntN(len(pattern) - 8)
			b := pattern[off : off+min(int(n), 8+r.IntN(len(pattern)-8-off))]
			if len(b) >= 8 {
				binary.LittleEndian.PutUint64(b, i)
			}
			h.Write(b)
			if _, werr = c.Write(b); werr != nil {
				return
			}
			n -= int64(len(b))
		}
		copy(sent[:], h.Sum(nil))
		werr = c.(interface{ CloseWrite() error }).CloseWrite()
	})
	h := sha256.New()
	gotN, err = io.Copy(h, c)
	copy(got[:], h.Sum(nil))
	wg.Wait()
	if err == nil {
		err = werr
	}
	return sent, got, gotN, err
}

// TestRelayTransfer moves bytes both ways at once through every path of
// Relay (spliced, read directly from the socket, read through a wrapper)
// and checks them with SHA-256, the counts, the counters and that every
// buffer was given back.
func TestRelayTransfer(t *testing.T) {
	const up, down = 16 << 20, 4 << 20
	tests := []struct {
		name    string
		aNet    string
		wrapA   bool
		observe bool
		splice  bool // on Linux, some bytes are spliced
	}{
		{name: "tcp to tcp, spliced", aNet: "tcp", splice: true},
		{name: "tcp to tcp, observed (copied up, spliced down)", aNet: "tcp", observe: true, splice: true},
		{name: "unix to tcp (spliced up, copied down)", aNet: "unix", splice: true},
		{name: "wrapper to tcp (copied both ways)", aNet: "tcp", wrapA: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, a := connPair(t, tt.aNet)
			b, server := connPair(t, "tcp")
			if tt.wrapA {
				a = wrapped{a}
			}
			var counted [2]atomic.Int64
			var observed int64
			obs := sha256.New()
			r := &Relay{
				Idle:      time.Minute,
				CountAToB: func(n int64) { counted[0].Add(n) },
				CountBToA: func(n int64) { counted[1].Add(n) },
			}
			if tt.observe {
				r.Observe = func(p []byte, _ time.Time) { obs.Write(p); observed += int64(len(p)) }
			}
			type res struct {
				ab, ba int64
				err    error
			}
			done := make(chan res, 1)
			splices := spliceCount()
			go func() {
				ab, ba, err := r.Run(context.Background(), a, b)
				done <- res{ab, ba, err}
			}()
			var srvSent, srvGot [32]byte
			var srvN int64
			var srvErr error
			var wg sync.WaitGroup
			wg.Go(func() { srvSent, srvGot, srvN, srvErr = sendRecv(server, 2, down) })
			cliSent, cliGot, cliN, err := sendRecv(client, 1, up)
			wg.Wait()
			if err != nil || srvErr != nil {
				t.Fatalf("client: %v; server: %v", err, srvErr)
			}
			got := <-done
			if got.err != nil {
				t.Errorf("Run: %v", got.err)
			}
			if srvN != up || cliN != down || got.ab != up || got.ba != down {
				t.Errorf("bytes: server got %d, client got %d, Run counted %d and %d; want %d up and %d down", srvN, cliN, got.ab, got.ba, up, down)
			}
			if cliSent != srvGot || srvSent != cliGot {
				t.Error("SHA-256 differs between the ends")
			}
			if counted[0].Load() != up || counted[1].Load() != down {
				t.Errorf("counters: %d and %d, want %d and %d", counted[0].Load(), counted[1].Load(), up, down)
			}
			if tt.observe && (observed != up || !bytes.Equal(obs.Sum(nil), cliSent[:])) {
				t.Errorf("Observe saw %d bytes (want %d), or other bytes than were sent", observed, up)
			}
			last, ab, ba := r.Activity()
			if last.IsZero() || ab.IsZero() || ba.IsZero() {
				t.Errorf("Activity() = %v, %v, %v; want times", last, ab, ba)
			}
			if n := relayBufsHeld.Load(); n != 0 {
				t.Errorf("%d buffers still taken", n)
			}
			if n := len(relayBigTokens); n != 0 {
				t.Errorf("%d big-buffer tokens still taken", n)
			}
			if n := spliceCount() - splices; (n > 0) != (tt.splice && runtime.GOOS == "linux") {
				t.Errorf("%d splices; want some: %v", n, tt.splice)
			}
		})
	}
}

// TestRelayPrefix: Prefix reaches B first and is not counted.
func TestRelayPrefix(t *testing.T) {
	client, a := connPair(t, "tcp")
	b, server := connPair(t, "tcp")
	r := &Relay{Prefix: []byte("PROXY "), Idle: time.Minute}
	done := make(chan int64, 1)
	go func() {
		ab, _, _ := r.Run(context.Background(), a, b)
		done <- ab
	}()
	io.WriteString(client, "hello")
	client.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(server)
	server.(*net.TCPConn).CloseWrite()
	io.ReadAll(client)
	if string(got) != "PROXY hello" {
		t.Errorf("B got %q, want %q", got, "PROXY hello")
	}
	if n := <-done; n != 5 {
		t.Errorf("Run counted %d bytes A to B, want 5", n)
	}
}

// TestRelayCountsWhileOpen: the byte counters are called before a
// direction waits for more bytes, so they are current on a connection
// that went quiet, on every path (net.Pipe through a buffer; TCP spliced
// one way and read directly the other, and both read directly with
// Observe).
func TestRelayCountsWhileOpen(t *testing.T) {
	run := func(t *testing.T, client, a, b, server net.Conn, observe bool, settled func(cond func() bool)) {
		var up, down atomic.Int64
		r := &Relay{CountAToB: func(n int64) { up.Add(n) }, CountBToA: func(n int64) { down.Add(n) }}
		if observe {
			r.Observe = func([]byte, time.Time) {}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Run(context.Background(), a, b)
		}()
		for i, msg := range []string{"hello", "a longer second message"} {
			io.WriteString(client, msg)
			if _, err := io.ReadFull(server, make([]byte, len(msg))); err != nil {
				t.Fatal(err)
			}
			io.WriteString(server, msg[:2])
			if _, err := io.ReadFull(client, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			wantUp, wantDown := int64(5), int64(2)
			if i == 1 {
				wantUp, wantDown = 5+23, 4
			}
			settled(func() bool { return up.Load() == wantUp && down.Load() == wantDown })
			if up.Load() != wantUp || down.Load() != wantDown {
				t.Errorf("message %d: counted %d up, %d down while open; want %d, %d", i, up.Load(), down.Load(), wantUp, wantDown)
			}
		}
		client.Close()
		server.Close()
		<-done
	}
	t.Run("pipe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			client, a := connPair(t, "pipe")
			b, server := connPair(t, "pipe")
			run(t, client, a, b, server, false, func(func() bool) { synctest.Wait() })
		})
	})
	for _, observe := range []bool{false, true} {
		name := "tcp"
		if observe {
			name += " observed"
		}
		t.Run(name, func(t *testing.T) {
			client, a := connPair(t, "tcp")
			b, server := connPair(t, "tcp")
			// On sockets the relay counts just after it wrote, which may be
			// after the peer read: wait for the counts (bounded).
			run(t, client, a, b, server, observe, func(cond func() bool) {
				for i := 0; i < 1000 && !cond(); i++ {
					time.Sleep(10 * time.Millisecond)
				}
			})
		})
	}
}

// TestRelayNoHalfClose: without CloseWrite (net.Pipe), the end of one
// direction ends both, and Run returns nil.
func TestRelayNoHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, a := connPair(t, "pipe")
		b, server := connPair(t, "pipe")
		done := make(chan error, 1)
		go func() {
			_, _, err := (&Relay{Idle: time.Hour}).Run(context.Background(), a, b)
			done <- err
		}()
		go io.Copy(io.Discard, server)
		client.Write([]byte("x"))
		client.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v, want nil", err)
		}
		server.Close()
	})
}

// TestRelayEnds: what ends a relay, and what Run returns then.
func TestRelayEnds(t *testing.T) {
	const idle = time.Minute
	tests := []struct {
		name  string
		relay func() *Relay
		// act runs with the far ends of A and B while Run runs.
		act     func(ctx context.Context, cancel context.CancelFunc, client, server, a net.Conn)
		want    error
		wantDur time.Duration // Run's duration, in the bubble's time
	}{
		{
			name:  "silent: idle",
			relay: func() *Relay { return &Relay{Idle: idle} },
			act: func(ctx context.Context, cancel context.CancelFunc, client, server, a net.Conn) {
				go io.Copy(io.Discard, client)
				go io.Copy(io.Discard, server)
			},
			want: ErrIdle, wantDur: idle,
		},
		{
			name:  "peer stops reading: its write blocked for idle",
			relay: func() *Relay { return &Relay{Idle: idle} },
			act: func(ctx context.Context, cancel context.CancelFunc, client, server, a net.Conn) {
				// server never reads but sends a byte every 20 s, so the
				// relay is never idle; only the blocked write ends it.
				go io.Copy(io.Discard, client)
				go func() {
					for {
						select {
						case <-ctx.Done():
							return
						case <-time.After(20 * time.Second):
						}
						if _, err := server.Write([]byte{1}); err != nil {
							return
						}
					}
				}()
				time.Sleep(30 * time.Second)
				client.Write([]byte("stuck")) // the relay reads it, then blocks writing it
			},
			want: ErrIdle, wantDur: 30*time.Second + idle,
		},
		{
			name: "read deadline hook",
			relay: func() *Relay {
				var start time.Time
				return &Relay{Idle: idle, ReadDeadline: func() time.Time {
					if start.IsZero() {
						start = time.Now()
					}
					return start.Add(10 * time.Second)
				}}
			},
			act: func(ctx context.Context, cancel context.CancelFunc, client, server, a net.Conn) {
				go io.Copy(io.Discard, client)
				go io.Copy(io.Discard, server)
			},
			want: ErrReadDeadline, wantDur: 10 * time.Second,
		},
		{
			name:  "context canceled",
			relay: func() *Relay { return &Relay{Idle: idle} },
			act: func(ctx context.Context, cancel context.CancelFunc, client, server, a net.Conn) {
				go io.Copy(io.Discard, client)
				go io.Copy(io.Discard, server)
				time.Sleep(5 * time.Second)
				cancel()
			},
			want: context.Canceled, wantDur: 5 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, a := connPair(t, "pipe")
				b, server := connPair(t, "pipe")
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				start := time.Now()
				go func() {
					_, _, err := tt.relay().Run(ctx, a, b)
					done <- err
				}()
				tt.act(ctx, cancel, client, server, a)
				err := <-done
				if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
					t.Errorf("Run: %v, want %v", err, tt.want)
				}
				if got := time.Since(start); got != tt.wantDur {
					t.Errorf("Run returned after %v, want %v", got, tt.wantDur)
				}
			})
		})
	}
}

// TestIdleTimeout (from parent/proxy): a one-way stream is never idle;
// the relay is closed between idle and 1.25×idle after the last byte.
func TestIdleTimeout(t *testing.T) {
	const idle = time.Minute
	for _, dir := range []string{"downstream busy", "upstream busy", "silent"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, pa := net.Pipe()
				pb, server := net.Pipe()
				done := make(chan error, 1)
				go func() {
					_, _, err := (&Relay{Idle: idle}).Run(context.Background(), pa, pb)
					done <- err
				}()
				go io.Copy(io.Discard, client)
				go io.Copy(io.Discard, server)
				start := time.Now()
				if dir != "silent" {
					// One byte every 40 s for 10 minutes, one way only: never idle.
					w := server
					if dir == "upstream busy" {
						w = client
					}
					for range 15 {
						time.Sleep(40 * time.Second)
						if _, err := w.Write([]byte{1}); err != nil {
							t.Fatalf("write after %v: %v", time.Since(start), err)
						}
					}
				}
				last := time.Now()
				err := <-done
				if !errors.Is(err, ErrIdle) {
					t.Errorf("relay: %v, want idle timeout", err)
				}
				if got := time.Since(last); got < idle || got > idle*5/4 {
					t.Errorf("closed %v after the last byte, want %v..%v", got, idle, idle*5/4)
				}
				for _, c := range []net.Conn{client, pa, pb, server} {
					c.Close()
				}
			})
		})
	}
}

// TestRelayIdleOnSockets: Idle ends a relay of real sockets, on the paths
// that wait without a buffer (spliced and direct reads). (Real time: the
// poller's deadlines do not run in a synctest bubble; nothing is timed.)
func TestRelayIdleOnSockets(t *testing.T) {
	for _, observe := range []bool{false, true} {
		client, a := connPair(t, "tcp")
		b, server := connPair(t, "tcp")
		r := &Relay{Idle: 50 * time.Millisecond}
		if observe {
			r.Observe = func([]byte, time.Time) {}
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := r.Run(context.Background(), a, b)
			done <- err
		}()
		io.WriteString(client, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(server, buf); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, ErrIdle) {
			t.Errorf("observe=%v: Run: %v, want ErrIdle", observe, err)
		}
	}
}

// TestRelayClosedByCaller: a connection closed by the caller (a drain,
// an eviction) ends the relay without an error.
func TestRelayClosedByCaller(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		_, a := connPair(t, network)
		b, _ := connPair(t, "tcp")
		done := make(chan error, 1)
		go func() {
			_, _, err := (&Relay{Idle: time.Hour}).Run(context.Background(), a, b)
			done <- err
		}()
		a.Close()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v, want nil", network, err)
		}
	}
}

// descConn is a net.Pipe end that passes for a descriptor's connection
// (syscall.Conn), whose timed-out Write can be resumed, as a socket's can.
type descConn struct{ net.Conn }

func (descConn) SyscallConn() (syscall.RawConn, error) { return nil, errors.New("a pipe") }

// TestRelaySlowReader: a peer that reads slowly but steadily is not idle,
// however long one buffer takes to reach it, and neither is the other
// direction meanwhile: bytes keep moving. That holds where a timed-out
// write can be resumed (sockets); elsewhere (TLS, whose timed-out Write
// fails every later one; wrappers) the whole buffer must go within Idle.
func TestRelaySlowReader(t *testing.T) {
	const idle = time.Minute
	const size = 256 << 10 // four buffers; at 1 KiB per 7 s, each takes 448 s
	for _, tt := range []struct {
		name    string
		desc    bool
		want    error
		wantDur time.Duration
		wantN   int64
	}{
		{name: "socket", desc: true, wantDur: (size/1024 - 1) * 7 * time.Second, wantN: size},
		{name: "other conn", want: ErrIdle, wantDur: idle, wantN: 9 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, a := net.Pipe()
				b, server := net.Pipe()
				var dst net.Conn = b
				if tt.desc {
					dst = descConn{b}
				}
				done := make(chan error, 1)
				var ab int64
				var dur time.Duration
				start := time.Now()
				go func() {
					var err error
					ab, _, err = (&Relay{Idle: idle}).Run(context.Background(), a, dst)
					dur = time.Since(start)
					a.Close()
					b.Close()
					done <- err
				}()
				go func() {
					client.Write(make([]byte, size))
					client.Close()
				}()
				var got int64
				buf := make([]byte, 1024)
				for {
					n, err := server.Read(buf)
					got += int64(n)
					if err != nil {
						break
					}
					time.Sleep(7 * time.Second)
				}
				if err := <-done; !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
					t.Errorf("Run: %v, want %v", err, tt.want)
				}
				if dur != tt.wantDur {
					t.Errorf("Run returned after %v, want %v", dur, tt.wantDur)
				}
				if got != tt.wantN || ab != tt.wantN {
					t.Errorf("the slow reader got %d bytes, Run counted %d; want %d", got, ab, tt.wantN)
				}
				server.Close()
			})
		})
	}
}

// timedOutConn's first Read fails as a TCP connection whose peer vanished
// (keepalive or retransmissions gave up), and its next ones return EOF, as
// the kernel's do then.
type timedOutConn struct {
	net.Conn
	failed bool
}

func (c *timedOutConn) Read(p []byte) (int, error) {
	if !c.failed {
		c.failed = true
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}
	}
	return 0, io.EOF
}

// TestRelayConnectionTimedOut: a connection that timed out (ETIMEDOUT,
// whose net.Error says Timeout) is a failure, not one of the relay's own
// deadlines passing: Run returns it, rather than reading on and passing
// the EOF that follows as the peer's clean end.
func TestRelayConnectionTimedOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, a := connPair(t, "pipe")
		b, server := connPair(t, "pipe")
		go io.Copy(io.Discard, client)
		go io.Copy(io.Discard, server)
		_, _, err := (&Relay{Idle: time.Minute}).Run(context.Background(), &timedOutConn{Conn: a}, b)
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Errorf("Run: %v, want the connection's ETIMEDOUT", err)
		}
	})
}
