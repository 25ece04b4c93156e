package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/parent"
)

// freeAddrs returns n distinct free loopback addresses: all are held open
// until every one is chosen, so the kernel cannot hand out one twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, "tcp://"+ln.Addr().String())
	}
	return out
}

type fakeSetup struct {
	dir   string
	yaml  string
	addrs map[string]string // enclave name → server address
}

// newFakeSetup writes fake EIFs for the named enclaves and a run.yaml
// that runs them with the fake nitro-cli. extra is appended to each
// enclave's entry.
func newFakeSetup(t *testing.T, names []string, extra string) *fakeSetup {
	t.Helper()
	dir := t.TempDir()
	f := &fakeSetup{dir: dir, addrs: map[string]string{}}
	var b strings.Builder
	fmt.Fprintf(&b, "nitro_cli: [%q, fake-nitro-cli, %q]\n", os.Args[0], dir)
	b.WriteString("http: tcp://127.0.0.1:0\n")
	b.WriteString("health: {interval: 50ms, timeout: 1s, failures: 2, start_timeout: 30s}\n")
	b.WriteString("restart: {min_backoff: 20ms, max_backoff: 100ms}\n")
	if err := os.Mkdir(filepath.Join(dir, "runs"), 0o700); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "run_logs: %q\nrun_logs_keep: 3\n", filepath.Join(dir, "runs"))
	b.WriteString("drain_timeout: 2s\nlog_records: 20\nenclaves:\n")
	addrs := freeAddrs(t, 2*len(names))
	for i, n := range names {
		listen, sink := addrs[2*i], addrs[2*i+1]
		f.addrs[n] = listen
		eif := filepath.Join(dir, n+".eif")
		writeFakeEIF(t, eif, fakeImage{Listen: listen, LogSink: sink})
		fmt.Fprintf(&b, "  - name: %s\n    eif: %s\n    memory_mib: 128\n    address: %s\n    log_sink: %s\n", n, eif, listen, sink)
		fmt.Fprintf(&b, "    ingress:\n      - listen: tcp://127.0.0.1:0\n        target: %s\n", listen)
		b.WriteString(extra)
	}
	f.yaml = b.String()
	return f
}

type runningSupervisor struct {
	s      *Supervisor
	logs   *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

func startSupervisor(t *testing.T, f *fakeSetup) *runningSupervisor {
	t.Helper()
	cfg, err := ParseConfig("run.yaml", []byte(f.yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Listen(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &runningSupervisor{s: s, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs)
			files, _ := filepath.Glob(filepath.Join(f.dir, "*.log"))
			for _, fn := range files {
				b, _ := os.ReadFile(fn)
				t.Logf("%s:\n%s", fn, tail(string(b), 600))
			}
		}
	})
	return r
}

// stop is SIGTERM: Serve must return with every enclave terminated.
func (r *runningSupervisor) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func (r *runningSupervisor) readyz(t *testing.T) int { return r.get(t, "/readyz") }

func (r *runningSupervisor) get(t *testing.T, path string) int {
	resp, err := http.Get("http://" + strings.TrimPrefix(r.s.HTTPAddr(), "tcp://") + path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// body returns the body of GET path.
func (r *runningSupervisor) body(t *testing.T, path string) string {
	resp, err := http.Get("http://" + strings.TrimPrefix(r.s.HTTPAddr(), "tcp://") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zombieChildren lists this process's children that exited and were not
// reaped.
func zombieChildren() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		fields := strings.Fields(s[i+1:])
		if len(fields) > 1 && fields[0] == "Z" && fields[1] == strconv.Itoa(me) {
			out = append(out, pid)
		}
	}
	return out
}

// TestKillEnclaveMidLoad is the acceptance test: under idempotent
// load through a Pool, one of two enclaves is killed; the supervisor
// restarts it, /readyz goes 503 then 200, no call is lost, and the log
// keeps the dead run's last records and how it ended. After SIGTERM no
// enclave process, zombie or goroutine is left.
func TestKillEnclaveMidLoad(t *testing.T) {
	f := newFakeSetup(t, []string{"a", "b"}, "")
	r := startSupervisor(t, f)
	waitUntil(t, "both enclaves are healthy", func() bool { return r.readyz(t) == http.StatusOK })
	for _, path := range []string{"/healthz", "/metrics"} {
		if code := r.get(t, path); code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
	}
	// The enclave servers' own counters, from their health answers.
	metrics := r.body(t, "/metrics")
	for _, want := range []string{`enclavekit_enclave_connections_total{enclave="a"}`, `enclavekit_enclave_dev{enclave="b"} 1`,
		`enclavekit_enclave_clock_skew_seconds{enclave="a"}`, `enclavekit_logsink_records_total{enclave="a"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}

	pool, err := parent.NewPool(context.Background(), parent.PoolOptions{
		Addrs:         []string{f.addrs["a"], f.addrs["b"]},
		ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond, FailThreshold: 1,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := pool.CallRaw(ctx, "echo", []byte("x"), parent.Idempotent())
				cancel()
				if err != nil || string(got) != "x" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err))
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitUntil(t, "load flows", func() bool { return ok.Load() > 50 })

	var victim Status
	for _, st := range r.s.Statuses() {
		if st.Name == "a" {
			victim = st
		}
	}
	if victim.ProcessID == 0 || victim.Run != 1 {
		t.Fatalf("enclave a: %+v; want run 1 with a process", victim)
	}
	if err := syscall.Kill(victim.ProcessID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "/readyz reports the loss", func() bool { return r.readyz(t) == http.StatusServiceUnavailable })
	waitUntil(t, "enclave a runs again and /readyz recovers", func() bool {
		st := r.s.Statuses()[0]
		return st.Run >= 2 && st.Healthy && r.readyz(t) == http.StatusOK
	})
	before := ok.Load()
	waitUntil(t, "load flows after the restart", func() bool { return ok.Load() > before+50 })
	close(stopLoad)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d idempotent calls lost (first: %v); %d succeeded", n, firstErr.Load(), ok.Load())
	}

	logs := r.logs.String()
	var ended string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "enclave run ended") && strings.Contains(l, "enclave=a") && strings.Contains(l, "run=1") {
			ended = l
		}
	}
	for _, want := range []string{"reason=crashed", "killed by signal", "killed", victim.EnclaveID, "fake enclave booted", "run_enclave=", "last_state="} {
		if !strings.Contains(ended, want) {
			t.Errorf("run-ended record lacks %q:\n%s", want, ended)
		}
	}

	// The dead run also has a file of its own.
	files, _ := filepath.Glob(filepath.Join(f.dir, "runs", "a_*_run1.log"))
	if len(files) != 1 {
		t.Fatalf("run files of a's first run: %v", files)
	}
	b, _ := os.ReadFile(files[0])
	for _, want := range []string{"reason=crashed", "killed by signal", "fake enclave booted"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q:\n%s", files[0], want, b)
		}
	}

	r.stop(t)
	if z := zombieChildren(); len(z) > 0 {
		t.Errorf("zombie children after shutdown: %v", z)
	}
	if left := fakeEnclaves(f.dir); len(left) != 0 {
		t.Errorf("enclaves still running after shutdown: %v", left)
	}
	for _, n := range []string{"a", "b"} {
		if !strings.Contains(r.logs.String(), "enclave="+n) || !strings.Contains(r.logs.String(), "reason=shutdown") {
			t.Errorf("no shutdown record for enclave %s", n)
		}
	}
}

// TestDrainThenTerminate: at SIGTERM an open ingress connection keeps
// working until it closes, while new connections are refused; only then is
// the enclave terminated.
func TestDrainThenTerminate(t *testing.T) {
	// A destination for the egress route that runs beside the enclave.
	dest, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	go func() {
		for {
			c, err := dest.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	f := newFakeSetup(t, []string{"a"}, "")
	port := dest.Addr().(*net.TCPAddr).Port
	f.yaml += fmt.Sprintf("egress:\n  routes: [{listen: 'tcp://127.0.0.1:0', to: '127.0.0.1:%d'}]\n  allowlist: [{address: 127.0.0.1, port: %d}]\n  limits: {drain_timeout: 100ms}\n", port, port)
	r := startSupervisor(t, f)
	waitUntil(t, "healthy", func() bool { return r.readyz(t) == http.StatusOK })

	eg, err := net.Dial("tcp", strings.TrimPrefix(r.s.EgressAddrs()[0], "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eg.Write([]byte("egress")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(eg, buf); err != nil || string(buf) != "egress" {
		t.Fatalf("through the egress route: %q, %v", buf, err)
	}
	eg.Close()

	ing := strings.TrimPrefix(r.s.IngressAddrs("a")[0], "tcp://")
	conn, err := net.Dial("tcp", ing)
	if err != nil {
		t.Fatal(err)
	}
	// One protocol v1 request through the ingress.
	c, err := parent.Dial(context.Background(), "tcp://"+ing, parent.Options{PoolSize: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CallRaw(context.Background(), "echo", []byte("before")); err != nil {
		t.Fatal(err)
	}
	r.cancel()
	r.cancel = nil
	waitUntil(t, "the ingress stops accepting", func() bool {
		nc, err := net.DialTimeout("tcp", ing, 100*time.Millisecond)
		if err != nil {
			return true
		}
		nc.Close()
		return false
	})
	if got, err := c.CallRaw(context.Background(), "echo", []byte("during")); err != nil || string(got) != "during" {
		t.Fatalf("call on an open connection during the drain: %q, %v", got, err)
	}
	if len(fakeEnclaves(f.dir)) != 1 {
		t.Fatal("the enclave was terminated before the ingress drained")
	}
	c.Close()
	conn.Close()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	if left := fakeEnclaves(f.dir); len(left) != 0 {
		t.Fatalf("enclaves left: %v", left)
	}
	if !strings.Contains(r.logs.String(), "terminate_enclave=") {
		t.Errorf("no terminate-enclave exit information in the log:\n%s", r.logs)
	}
}

// TestStartFailureBacksOff: when run-enclave fails, its exit status and
// message are logged and it is retried.
func TestStartFailureBacksOff(t *testing.T) {
	f := newFakeSetup(t, []string{"a"}, "")
	writeFakeEIF(t, filepath.Join(f.dir, "a.eif"), fakeImage{Fail: true})
	r := startSupervisor(t, f)
	waitUntil(t, "three failed starts", func() bool { return r.s.Statuses()[0].Run >= 3 })
	if r.readyz(t) != http.StatusServiceUnavailable {
		t.Fatal("ready without an enclave")
	}
	r.stop(t)
	logs := r.logs.String()
	for _, want := range []string{"reason=start_failed", "exit 1", "Insufficient hugepages"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// TestListenErrorNamesTheField: a port in use fails before any enclave
// starts, naming the file, line and field.
func TestListenErrorNamesTheField(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	f := newFakeSetup(t, []string{"a"}, "")
	f.yaml = strings.Replace(f.yaml, "      - listen: tcp://127.0.0.1:0", "      - listen: tcp://"+busy.Addr().String(), 1)
	cfg, err := ParseConfig("run.yaml", []byte(f.yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(f.yaml[:strings.Index(f.yaml, busy.Addr().String())], "\n")
	err = s.Listen(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("run.yaml:%d: enclaves[0].ingress[0].listen: cannot listen on tcp://%s", line, busy.Addr())) {
		t.Fatalf("err = %v", err)
	}
	if len(fakeEnclaves(f.dir)) != 0 {
		t.Fatal("an enclave was started")
	}
}
