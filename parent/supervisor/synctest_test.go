package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// scriptedLauncher is an in-memory nitro-cli: each run either fails to
// start or starts an enclave that describe lists while alive() says so.
type scriptedLauncher struct {
	mu         sync.Mutex
	starts     []time.Duration // since t0
	t0         time.Time
	failStart  bool
	alive      func(run int, age time.Duration) bool
	cur        string
	runN       int
	started    time.Time
	terminated []string
	// hang, when set, makes describe block until it is closed, ignoring
	// its context: a stuck supervision loop.
	hang chan struct{}
}

func (l *scriptedLauncher) run(ctx context.Context, e *Enclave) (EnclaveInfo, ExitInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runN++
	l.starts = append(l.starts, time.Since(l.t0))
	x := ExitInfo{Args: "run-enclave", Code: 0}
	if l.failStart {
		x.Code = 1
		return EnclaveInfo{}, x, errors.New("run-enclave failed")
	}
	l.cur = fmt.Sprintf("enc-%d", l.runN)
	l.started = time.Now()
	return EnclaveInfo{EnclaveID: l.cur, EnclaveCID: uint64(e.CID)}, x, nil
}

func (l *scriptedLauncher) describe(ctx context.Context) ([]EnclaveInfo, ExitInfo, error) {
	if l.hang != nil {
		<-l.hang
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == "" || !l.alive(l.runN, time.Since(l.started)) {
		return nil, ExitInfo{Code: 0}, nil
	}
	return []EnclaveInfo{{EnclaveID: l.cur, State: StateRunning}}, ExitInfo{}, nil
}

func (l *scriptedLauncher) terminate(ctx context.Context, id string) ExitInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.terminated = append(l.terminated, id)
	if id == l.cur {
		l.cur = ""
	}
	return ExitInfo{Args: "terminate-enclave", Code: 0}
}

// TestRestartBackoff drives the restart loop in virtual time: the wait
// before each restart doubles from min_backoff to max_backoff.
func TestRestartBackoff(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failStart bool
		alive     func(run int, age time.Duration) bool
		probeOK   func(run int) bool
		want      []time.Duration // start times of the first runs
		wantTerm  int             // terminate-enclave calls during them
	}{
		{
			name:  "crash loop",
			alive: func(int, time.Duration) bool { return false },
			want:  []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond, 140 * time.Millisecond, 240 * time.Millisecond, 340 * time.Millisecond},
		},
		{
			name:      "start failures",
			failStart: true,
			want:      []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond, 140 * time.Millisecond, 240 * time.Millisecond},
		},
		{
			// Never healthy: restarted after start_timeout (1s), and
			// terminated first because it still runs.
			name:     "start timeout",
			alive:    func(int, time.Duration) bool { return true },
			probeOK:  func(int) bool { return false },
			want:     []time.Duration{0, 1020 * time.Millisecond, 2060 * time.Millisecond},
			wantTerm: 2,
		},
		{
			// Healthy, then two failed probes (interval 50ms): restarted.
			name:     "unhealthy",
			alive:    func(int, time.Duration) bool { return true },
			probeOK:  nil,                                                                // set below: healthy for the first probe of each run only
			want:     []time.Duration{0, 120 * time.Millisecond, 240 * time.Millisecond}, // healthy for max_backoff: the backoff starts over
			wantTerm: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := fastSupervisor(t)
				l := &scriptedLauncher{t0: time.Now(), failStart: tc.failStart, alive: tc.alive}
				s.nitr = l
				probes := map[string]int{}
				s.probeFn = func(ctx context.Context, e *Enclave) (protocol.HealthResponse, error) {
					l.mu.Lock()
					run, id := l.runN, l.cur
					l.mu.Unlock()
					probes[id]++
					ok := false
					switch {
					case tc.probeOK != nil:
						ok = tc.probeOK(run)
					case tc.name == "unhealthy":
						ok = probes[id] == 1
					}
					if ok {
						return protocol.HealthResponse{Version: "test"}, nil
					}
					return protocol.HealthResponse{}, errors.New("no answer")
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { s.supervise(ctx, s.units[0]); close(done) }()
				close(s.drainGate())
				for {
					l.mu.Lock()
					n := len(l.starts)
					l.mu.Unlock()
					if n >= len(tc.want) {
						break
					}
					time.Sleep(time.Millisecond)
				}
				cancel()
				<-done
				l.mu.Lock()
				defer l.mu.Unlock()
				got := l.starts[:len(tc.want)]
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("runs started at %v, want %v", got, tc.want)
				}
				// The last run may have been terminated at shutdown.
				if term := len(l.terminated); term < tc.wantTerm || term > tc.wantTerm+1 {
					t.Fatalf("terminate-enclave called %d times, want %d (+1 at shutdown)", term, tc.wantTerm)
				}
			})
		})
	}
}

// TestLiveness: /healthz (Live) stays true through slow but bounded
// steps and turns false only when a supervision loop is stuck past the
// stall bound.
func TestLiveness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := fastSupervisor(t)
		l := &scriptedLauncher{t0: time.Now(), alive: func(int, time.Duration) bool { return true }, hang: make(chan struct{})}
		s.nitr = l
		s.probeFn = func(context.Context, *Enclave) (protocol.HealthResponse, error) {
			return protocol.HealthResponse{}, nil
		}
		if !s.Live() {
			t.Fatal("not live before starting")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.supervise(ctx, s.units[0]); close(done) }()
		close(s.drainGate())
		bound := s.stallBound()
		time.Sleep(bound - time.Second)
		synctest.Wait()
		if !s.Live() {
			t.Fatalf("not live %v into a stuck describe; the bound is %v", bound-time.Second, bound)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s.Live() {
			t.Fatal("still live past the stall bound")
		}
		close(l.hang)
		cancel()
		<-done
	})
}

// fastSupervisor is a supervisor of oneEnclave with short health and
// restart timings, for the tests that script its launcher.
func fastSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	cfg, err := ParseConfig("run.yaml", []byte("health: {interval: 50ms, timeout: 10ms, failures: 2, start_timeout: 1s}\nrestart: {min_backoff: 20ms, max_backoff: 100ms}\n"+oneEnclave))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
