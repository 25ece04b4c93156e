package parent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// countCalls registers method "counted" on e, which answers like echo, or
// "unavailable" for the body "busy", and counts its calls.
func countCalls(e *realEnclave) *atomic.Int64 {
	var n atomic.Int64
	e.srv.Handle("counted", func(_ context.Context, b []byte) ([]byte, error) {
		n.Add(1)
		if string(b) == "busy" {
			return nil, protocol.ErrUnavailable
		}
		if string(b) == "bad" {
			return nil, protocol.ErrBadRequest
		}
		return b, nil
	})
	return &n
}

func poolT(t *testing.T, opts PoolOptions) *Pool {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	if opts.Client.CallTimeout == 0 {
		opts.Client.CallTimeout = 10 * time.Second
	}
	p, err := NewPool(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPoolOptionsValidate(t *testing.T) {
	disc := func(context.Context) ([]string, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		o    PoolOptions
		ok   bool
	}{
		{"addrs", PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}}, true},
		{"discover", PoolOptions{Discover: disc}, true},
		{"neither", PoolOptions{}, false},
		{"both", PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, Discover: disc}, false},
		{"bad addr", PoolOptions{Addrs: []string{"nonsense"}}, false},
		{"negative threshold", PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, FailThreshold: -1}, false},
		{"negative interval", PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, ProbeInterval: -1}, false},
		{"bad client", PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, Client: Options{PoolSize: 65}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.o.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v (or ErrConfig)", err, tc.ok)
			}
		})
	}
}

// TestPoolSpreadsCalls: calls go to every enclave in service.
func TestPoolSpreadsCalls(t *testing.T) {
	var es []*realEnclave
	var addrs []string
	for range 3 {
		e := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
		es = append(es, e)
		addrs = append(addrs, e.addr)
	}
	p := poolT(t, PoolOptions{Addrs: addrs, ProbeInterval: time.Hour})
	for i := range 30 {
		var sum int
		if err := p.Call(context.Background(), "add", struct{ A, B int }{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d: %d, %v", i, sum, err)
		}
	}
	for i, e := range es {
		// One probe plus about ten calls each.
		if n := e.srv.Stats().Requests; n < 5 {
			t.Errorf("enclave %d served %d requests; calls are not spread", i, n)
		}
	}
}

// TestPoolRetry stops one of two enclaves while the pool still counts it
// in service: idempotent calls all succeed on the other; the others fail
// when they land on the dead one, and are not retried.
func TestPoolRetry(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       []CallOption
		wantFailed bool
	}{
		{"idempotent", []CallOption{Idempotent()}, false},
		{"not idempotent", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
			b := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
			p := poolT(t, PoolOptions{Addrs: []string{a.addr, b.addr}, ProbeInterval: time.Hour, FailThreshold: 1000})
			served := countCalls(a)
			b.stop()
			failed := 0
			for range 10 {
				got, err := p.CallRaw(context.Background(), "counted", []byte("x"), tc.opts...)
				switch {
				case err == nil && string(got) == "x":
				case err != nil && tc.wantFailed:
					failed++
				default:
					t.Fatalf("echo = %q, %v", got, err)
				}
			}
			if tc.wantFailed && failed == 0 {
				t.Fatal("no call failed, though half went to a stopped enclave")
			}
			if n := served.Load(); n != int64(10-failed) {
				t.Fatalf("live enclave served %d calls, want %d", n, 10-failed)
			}
		})
	}
}

// TestPoolRemoteErrorNotRetried: an answer from the enclave, other than
// "unavailable", is final even for an idempotent call.
func TestPoolRemoteErrorNotRetried(t *testing.T) {
	a := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	b := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	p := poolT(t, PoolOptions{Addrs: []string{a.addr, b.addr}, ProbeInterval: time.Hour})
	na, nb := countCalls(a), countCalls(b)
	for _, tc := range []struct {
		body      string
		wantTotal int64 // calls both servers saw
	}{
		{"bad", 1},
		{"busy", 2}, // unavailable: retried once on the other
	} {
		t.Run(tc.body, func(t *testing.T) {
			before := na.Load() + nb.Load()
			if _, err := p.CallRaw(context.Background(), "counted", []byte(tc.body), Idempotent()); err == nil {
				t.Fatal("want an error")
			}
			if got := na.Load() + nb.Load() - before; got != tc.wantTotal {
				t.Fatalf("the call reached the enclaves %d times, want %d", got, tc.wantTotal)
			}
		})
	}
}

// TestPoolProbeThresholds drives the prober with scripted results under
// synctest: FailThreshold failures take an enclave out, one success puts
// it back.
func TestPoolProbeThresholds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int
		results   string // per probe round: '+' ok, '-' failed
		want      string // in service after each round: 'y' or 'n'
	}{
		{"stays in below threshold", 3, "+--+--", "yyyyyy"},
		{"out at threshold", 3, "+---", "yyyn"},
		{"back after one success", 2, "+--+", "yynY"},
		{"never up", 1, "---", "nnn"},
		{"up late", 3, "--+", "nny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var round atomic.Int32
				probe := func(context.Context, *member) error {
					if tc.results[round.Load()] == '+' {
						return nil
					}
					return errors.New("probe failed")
				}
				p, err := newPool(context.Background(), PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, ProbeInterval: time.Second, FailThreshold: tc.threshold, Logger: quiet}, probe)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				for i := range tc.results {
					if i > 0 {
						round.Store(int32(i))
						time.Sleep(time.Second)
						synctest.Wait()
					}
					st := p.Members()[0]
					if want := tc.want[i] == 'y' || tc.want[i] == 'Y'; st.Healthy != want {
						t.Fatalf("after round %d (%c): healthy=%v, want %v (%+v)", i, tc.results[i], st.Healthy, want, st)
					}
				}
			})
		})
	}
}

// TestPoolDiscovery: enclaves join and leave with the discovery answer.
func TestPoolDiscovery(t *testing.T) {
	a := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	b := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	var mu sync.Mutex
	current := []string{a.addr}
	set := func(addrs ...string) {
		mu.Lock()
		current = addrs
		mu.Unlock()
	}
	disc := func(context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}
	p := poolT(t, PoolOptions{Discover: disc, DiscoverInterval: 10 * time.Millisecond, ProbeInterval: 10 * time.Millisecond})
	waitFor := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var got []string
			for _, m := range p.Members() {
				if m.Healthy {
					got = append(got, m.Addr)
				}
			}
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("members in service %v, want %v", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(a.addr)
	set(a.addr, b.addr)
	waitFor(a.addr, b.addr)
	set(b.addr)
	waitFor(b.addr)
	if _, err := p.CallRaw(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
}

// TestPoolCallerErrorNotRetried: a call the client refuses before sending
// anything fails at once, even when idempotent.
func TestPoolCallerErrorNotRetried(t *testing.T) {
	a := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	b := startEnclave(t, enclaveConfig("tcp://127.0.0.1:0"))
	p := poolT(t, PoolOptions{Addrs: []string{a.addr, b.addr}, ProbeInterval: time.Hour})
	for _, tc := range []struct {
		name, method string
		body         []byte
	}{
		{"empty method", "", nil},
		{"too large", "echo", make([]byte, 2<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.CallRaw(context.Background(), tc.method, tc.body, Idempotent()); err == nil || retryable(err) {
				t.Fatalf("err = %v; want a final error", err)
			}
		})
	}
}

func TestPoolNoHealthy(t *testing.T) {
	p := poolT(t, PoolOptions{Addrs: []string{"tcp://127.0.0.1:1"}, ProbeInterval: time.Hour, ProbeTimeout: time.Second})
	if _, err := p.CallRaw(context.Background(), "echo", nil, Idempotent()); !errors.Is(err, ErrNoHealthyEnclave) {
		t.Fatalf("err = %v, want ErrNoHealthyEnclave", err)
	}
	p.Close()
	if _, err := p.CallRaw(context.Background(), "echo", nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("after Close: err = %v, want ErrClientClosed", err)
	}
}
