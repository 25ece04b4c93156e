package parent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

func dialT(t testing.TB, addr string, opts Options) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 10 * time.Second
	}
	c, err := Dial(context.Background(), addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFakeCallRawEcho(t *testing.T) {
	s := newFakeServer(t, echoReply)
	c := dialT(t, s.Addr(), Options{})
	for _, body := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{7}, 100_000)} {
		got, err := c.CallRaw(context.Background(), "echo", body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("echo of %d bytes returned %d bytes", len(body), len(got))
		}
	}
}

func TestFakeRemoteErrors(t *testing.T) {
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
		var code protocol.Code
		fmt.Sscan(env.Method, &code)
		resp := protocol.Envelope{ID: env.ID, Code: code}
		if code != protocol.CodeOK {
			resp.Message = code.Message()
		}
		fc.send(resp)
	})
	c := dialT(t, s.Addr(), Options{})
	for _, tc := range []struct {
		code protocol.Code
		want error
	}{
		{protocol.CodeBadRequest, protocol.ErrBadRequest},
		{protocol.CodeUnknownMethod, protocol.ErrUnknownMethod},
		{protocol.CodeTooLarge, protocol.ErrTooLarge},
		{protocol.CodeTimeout, protocol.ErrTimeout},
		{protocol.CodeUnavailable, protocol.ErrUnavailable},
		{protocol.CodeUnauthenticated, protocol.ErrUnauthenticated},
		{protocol.CodeInternal, protocol.ErrInternal},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			_, err := c.CallRaw(context.Background(), fmt.Sprint(uint8(tc.code)), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var re *protocol.RemoteError
			if !errors.As(err, &re) || re.Code != tc.code {
				t.Fatalf("err = %#v, want a *protocol.RemoteError with code %d", err, tc.code)
			}
			// A remote error leaves the connection usable.
			if _, err := c.CallRaw(context.Background(), "0", nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFakeHostileResponses: every protocol violation breaks the connection
// and fails the call with ErrConnLost; the next call works on a new one.
func TestFakeHostileResponses(t *testing.T) {
	big := make([]byte, 64<<10)
	for _, tc := range []struct {
		name  string
		reply func(fc *fakeConn, env protocol.Envelope)
		proto bool // also ErrProtocol
	}{
		{"unknown id", func(fc *fakeConn, env protocol.Envelope) {
			fc.send(protocol.Envelope{ID: env.ID + 1000})
		}, true},
		{"id zero", func(fc *fakeConn, env protocol.Envelope) {
			fc.send(protocol.Envelope{ID: 0})
		}, true},
		{"request instead of response", func(fc *fakeConn, env protocol.Envelope) {
			fc.send(protocol.Envelope{ID: env.ID, Method: "evil"})
		}, true},
		{"garbage envelope", func(fc *fakeConn, env protocol.Envelope) {
			fc.sendRaw([]byte{0xff, 0x00, 0x13})
		}, true},
		{"oversized frame", func(fc *fakeConn, env protocol.Envelope) {
			fc.send(protocol.Envelope{ID: env.ID, Body: big})
		}, false},
		{"length prefix ff ff ff ff", func(fc *fakeConn, env protocol.Envelope) {
			fc.Write([]byte{0xff, 0xff, 0xff, 0xff})
		}, false},
		{"truncated frame", func(fc *fakeConn, env protocol.Envelope) {
			fc.Write([]byte{0, 0, 0, 9, 1})
			fc.Close()
		}, false},
		{"close without answer", func(fc *fakeConn, env protocol.Envelope) {
			fc.Close()
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			evil := true
			s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
				mu.Lock()
				e := evil
				mu.Unlock()
				if e {
					tc.reply(fc, env)
					return
				}
				echoReply(fc, env)
			})
			c := dialT(t, s.Addr(), Options{PoolSize: 1, MaxFrameSize: 32 << 10})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.CallRaw(ctx, "m", []byte("hi"))
			if !errors.Is(err, ErrConnLost) {
				t.Fatalf("err = %v, want ErrConnLost", err)
			}
			if tc.proto && !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol too", err)
			}
			mu.Lock()
			evil = false
			mu.Unlock()
			got, err := c.CallRaw(ctx, "m", []byte("again"))
			if err != nil || string(got) != "again" {
				t.Fatalf("call after the break = %q, %v; want a fresh connection", got, err)
			}
		})
	}
}

func TestFakeCancelThenLateResponse(t *testing.T) {
	release := make(chan struct{})
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
		if env.Method == "slow" {
			<-release
		}
		echoReply(fc, env)
	})
	c := dialT(t, s.Addr(), Options{PoolSize: 1})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.CallRaw(ctx, "slow", nil)
		errc <- err
	}()
	// A fast call proves the slow one is in flight on the same connection.
	if _, err := c.CallRaw(context.Background(), "fast", nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(release) // the late response arrives for an abandoned id
	for i := 0; i < 10; i++ {
		got, err := c.CallRaw(context.Background(), "fast", []byte{byte(i)})
		if err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("call %d after a late response = %v, %v", i, got, err)
		}
	}
}

func TestFakeServerCrashMidCall(t *testing.T) {
	started := make(chan struct{}, 8)
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
		if env.Method == "hang" {
			started <- struct{}{}
			return // never answers
		}
		echoReply(fc, env)
	})
	c := dialT(t, s.Addr(), Options{PoolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := c.CallRaw(ctx, "hang", nil)
			errc <- err
		}()
	}
	for range 3 {
		<-started
	}
	s.DropConns()
	for range 3 {
		if err := <-errc; !errors.Is(err, ErrConnLost) {
			t.Fatalf("in-flight call err = %v, want ErrConnLost", err)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the calls ended only at their deadline")
	}
	if _, err := c.CallRaw(ctx, "echo", nil); err != nil {
		t.Fatalf("call after the crash: %v", err)
	}
}

func TestFakeConcurrent(t *testing.T) {
	s := newFakeServer(t, echoReply)
	c := dialT(t, s.Addr(), Options{PoolSize: 3})
	concurrentEcho(t, c, 64, 50)
}

// concurrentEcho runs calls echo calls from each of goroutines goroutines
// on c, each with a distinct body, and checks every answer byte for byte.
func concurrentEcho(t *testing.T, c *Client, goroutines, calls int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				want := fmt.Appendf(nil, "goroutine %d call %d", g, i)
				got, err := c.CallRaw(context.Background(), "echo", want)
				if err != nil || !bytes.Equal(got, want) {
					errc <- fmt.Errorf("got %q, %v; want %q", got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

func TestClientClosed(t *testing.T) {
	release := make(chan struct{})
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) { <-release })
	t.Cleanup(func() { close(release) })
	c := dialT(t, s.Addr(), Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.CallRaw(context.Background(), "m", nil)
		errc <- err
	}()
	time.Sleep(0) // let it start; the outcome is the same either way
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClientClosed) {
		t.Fatalf("in-flight err = %v, want ErrClientClosed", err)
	}
	if _, err := c.CallRaw(context.Background(), "m", nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("err after Close = %v, want ErrClientClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDialErrors(t *testing.T) {
	for _, tc := range []struct {
		addr string
		opts Options
	}{
		{"nonsense", Options{}},
		{"tcp://127.0.0.1:1", Options{}}, // nothing listens on port 1
		{"tcp://127.0.0.1:0", Options{PoolSize: -1}},
		{"tcp://127.0.0.1:0", Options{MaxFrameSize: protocol.MaxFrameSizeLimit + 1}},
	} {
		if c, err := Dial(context.Background(), tc.addr, tc.opts); err == nil {
			c.Close()
			t.Errorf("Dial(%q, %+v) succeeded", tc.addr, tc.opts)
		}
	}
}

func TestCallBadMethodAndBody(t *testing.T) {
	s := newFakeServer(t, echoReply)
	c := dialT(t, s.Addr(), Options{MaxFrameSize: 1024})
	if _, err := c.CallRaw(context.Background(), "", nil); err == nil {
		t.Error("empty method accepted")
	}
	if _, err := c.CallRaw(context.Background(), string(make([]byte, 129)), nil); err == nil {
		t.Error("129-byte method accepted")
	}
	if _, err := c.CallRaw(context.Background(), "m", make([]byte, 2048)); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Errorf("oversized request err = %v, want ErrFrameTooLarge", err)
	}
	// The refused request did not break the connection.
	if _, err := c.CallRaw(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	var out struct{ A int }
	if err := c.Call(context.Background(), "m", map[string]int{"A": 1}, &out); err != nil || out.A != 1 {
		t.Fatalf("Call = %+v, %v", out, err)
	}
	if err := c.Call(context.Background(), "m", make(chan int), nil); err == nil {
		t.Error("unencodable request accepted")
	}
}

// pipeServer serves protocol v1 on the server end of net.Pipe connections
// inside a synctest bubble.
func pipeDialer(serve func(net.Conn)) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		a, b := net.Pipe()
		go serve(b)
		return a, nil
	}
}

// countingPipeDialer is pipeDialer with the connections numbered from 1;
// dials reports how many were made.
func countingPipeDialer(serve func(n int, c net.Conn)) (dial func(context.Context, string) (net.Conn, error), dials func() int) {
	var count atomic.Int64
	return pipeDialer(func(c net.Conn) { serve(int(count.Add(1)), c) }), func() int { return int(count.Load()) }
}

func TestCallDeadlineSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The server reads requests and never answers.
		dialer := pipeDialer(func(c net.Conn) {
			defer c.Close()
			io.Copy(io.Discard, c)
		})
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, CallTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = c.CallRaw(ctx, "m", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("call returned after %v, want 3s", d)
		}

		// No deadline on ctx: Options.CallTimeout applies.
		start = time.Now()
		_, err = c.CallRaw(context.Background(), "m", nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Minute {
			t.Fatalf("err = %v after %v, want DeadlineExceeded after 1m", err, time.Since(start))
		}
	})
}

// TestCallWriteBlockedSynctest: a server that stops reading blocks the
// request write; the deadline still ends the call and the torn connection
// is replaced.
func TestCallWriteBlockedSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stuck := make(chan struct{})
		dialer, _ := countingPipeDialer(func(n int, c net.Conn) {
			defer c.Close()
			if n == 1 {
				// Read a few bytes, then stop reading.
				c.Read(make([]byte, 3))
				<-stuck
				return
			}
			serveEcho(c)
		})
		c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err = c.CallRaw(ctx, "m", make([]byte, 100))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Fatalf("err = %v after %v, want DeadlineExceeded after 2s", err, time.Since(start))
		}
		close(stuck)
		got, err := c.CallRaw(context.Background(), "m", []byte("ok"))
		if err != nil || string(got) != "ok" {
			t.Fatalf("call on the replacement = %q, %v", got, err)
		}
	})
}

func TestFakeRemoteErrorMessageBounded(t *testing.T) {
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
		fc.send(protocol.Envelope{ID: env.ID, Code: protocol.CodeInternal, Message: "\x1b[2J" + strings.Repeat("spam\n", 2000)})
	})
	c := dialT(t, s.Addr(), Options{})
	_, err := c.CallRaw(context.Background(), "m", nil)
	var re *protocol.RemoteError
	if !errors.As(err, &re) || !errors.Is(err, protocol.ErrInternal) {
		t.Fatalf("err = %v", err)
	}
	if len(re.Message) > maxRemoteMessage || strings.ContainsAny(re.Message, "\x1b\n") {
		t.Fatalf("remote message not bounded and cleaned: %d bytes %q…", len(re.Message), re.Message[:20])
	}
}

// TestFakeAbandonedLimit: a server that never answers cannot make the
// client remember abandoned ids without bound; the connection is recycled.
func TestFakeAbandonedLimit(t *testing.T) {
	defer func(n int) { maxAbandoned = n }(maxAbandoned)
	maxAbandoned = 3
	var mu sync.Mutex
	seen := map[net.Addr]bool{}
	s := newFakeServer(t, func(fc *fakeConn, env protocol.Envelope) {
		mu.Lock()
		seen[fc.RemoteAddr()] = true
		mu.Unlock()
		if env.Method == "echo" {
			echoReply(fc, env)
		}
	})
	c := dialT(t, s.Addr(), Options{PoolSize: 1})
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.CallRaw(ctx, "silence", nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrConnLost) {
			t.Fatalf("call %d: err = %v", i, err)
		}
	}
	if _, err := c.CallRaw(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("requests came over %d connection(s); want the first recycled", len(seen))
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o  Options
		ok bool
	}{
		{Options{}, true},
		{Options{PoolSize: 64, MaxFrameSize: protocol.MaxFrameSizeLimit, CallTimeout: -1, DialTimeout: time.Second}, true},
		{Options{PoolSize: 65}, false},
		{Options{PoolSize: -1}, false},
		{Options{MaxFrameSize: -1}, false},
		{Options{DialTimeout: -1}, false},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("Validate(%+v) = %v, want ok=%v (or ErrConfig)", tc.o, err, tc.ok)
		}
	}
}

func TestAttestOptionsValidate(t *testing.T) {
	pcr := make([]byte, 48)
	for _, tc := range []struct {
		name string
		o    AttestOptions
		ok   bool
	}{
		{"pcrs", AttestOptions{PCRs: map[int][]byte{0: pcr}}, true},
		{"any", AttestOptions{AnyImage: true}, true},
		{"no policy", AttestOptions{}, false},
		{"short pcr", AttestOptions{PCRs: map[int][]byte{0: pcr[:47]}}, false},
		{"pcr index", AttestOptions{PCRs: map[int][]byte{32: pcr}}, false},
		{"negative age", AttestOptions{AnyImage: true, MaxAge: -1}, false},
		{"user data", AttestOptions{AnyImage: true, UserData: make([]byte, 1025)}, false},
		{"public key", AttestOptions{AnyImage: true, PublicKey: make([]byte, 1025)}, false},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%s: Validate = %v, want ok=%v (or ErrConfig)", tc.name, err, tc.ok)
		}
	}
}
