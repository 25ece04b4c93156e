package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/parent/proxy"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Reasons a run ended, as logged and in the restarts metric.
const (
	ReasonCrashed      = "crashed"       // describe-enclaves no longer lists it running
	ReasonUnhealthy    = "unhealthy"     // Health.Failures probes failed in a row
	ReasonStartTimeout = "start_timeout" // never answered within Health.StartTimeout
	ReasonStartFailed  = "start_failed"  // run-enclave failed
	ReasonShutdown     = "shutdown"      // the supervisor is stopping
)

// terminateTimeout bounds one terminate-enclave, describeTimeout one
// describe-enclaves.
const (
	terminateTimeout = 30 * time.Second
	describeTimeout  = 30 * time.Second
)

// Options are the supervisor's injectable dependencies; all optional.
type Options struct {
	// Logger receives the supervisor's log and, with an "enclave"
	// attribute, every enclave's records. nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the metrics; /metrics serves it. nil means a new
	// registry.
	Registry *prometheus.Registry
}

// Status is the state of one enclave.
type Status struct {
	Name      string `json:"name"`
	CID       uint32 `json:"cid"`
	Run       int    `json:"run"`                  // runs started so far
	EnclaveID string `json:"enclave_id,omitempty"` // of the current run
	ProcessID int    `json:"process_id,omitempty"`
	Healthy   bool   `json:"healthy"`
	Restarts  int    `json:"restarts"`
	LastEnd   string `json:"last_end,omitempty"` // why the previous run ended
}

// Supervisor runs the enclaves and the parent components of a Config.
// Call Listen, then Serve.
type Supervisor struct {
	cfg  *Config
	log  *slog.Logger
	reg  *prometheus.Registry
	nitr launcher
	// probeFn checks one enclave's health; tests replace it.
	probeFn func(ctx context.Context, e *Enclave) (protocol.HealthResponse, error)
	m       *metrics
	now     func() time.Time

	units []*unit
	proxy *proxy.Proxy

	httpLn net.Listener
	httpS  *http.Server

	mu       sync.Mutex
	draining bool
	listened bool
	served   bool
	gate     chan struct{} // see drainGate
}

type unit struct {
	e      *Enclave
	ring   *ring
	sink   *logsink.Sink
	sinkLn net.Listener
	ings   []*port
	// beat is when supervise last made progress (UnixNano); 0 before it
	// starts. /healthz fails when it is older than the stall bound.
	beat atomic.Int64
	// unreaped are enclave processes (our children, as subreaper) that
	// still ran when their run ended; only supervise touches it.
	unreaped []int

	mu     sync.Mutex
	status Status
	health *protocol.HealthResponse // the last answered probe; nil before one
}

// reapPending reaps the enclave processes of earlier runs that had not
// exited when their run ended, waiting up to wait for each.
func (u *unit) reapPending(wait time.Duration) {
	left := u.unreaped[:0]
	for _, pid := range u.unreaped {
		if _, done := reap(pid, wait); !done {
			left = append(left, pid)
		}
	}
	u.unreaped = left
}

// port is one ingress port of an enclave.
type port struct {
	in *ingress.Server
	ln net.Listener
}

// New checks cfg (already validated by LoadConfig or Validate) and
// prepares the components; it starts nothing.
func New(cfg *Config, opts Options) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Supervisor{cfg: cfg, log: opts.Logger, reg: opts.Registry, nitr: nitroCLI{cmd: cfg.NitroCLI}, now: time.Now}
	s.probeFn = s.probe
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(s.reg)
	if err != nil {
		return nil, fmt.Errorf("supervisor: registering metrics: %w", err)
	}
	s.m = m
	for i := range cfg.Enclaves {
		e := &cfg.Enclaves[i]
		u := &unit{e: e, ring: newRing(cfg.LogRecords, s.log.Handler())}
		u.status = Status{Name: e.Name, CID: e.CID}
		sink, err := logsink.New(logsink.Config{Listen: e.LogSink, Handler: u.ring, Enclave: e.Name})
		if err != nil {
			return nil, fmt.Errorf("supervisor: enclave %s log sink: %w", e.Name, err)
		}
		u.sink = sink
		for _, c := range sink.Collectors(prometheus.Labels{"enclave": e.Name}) {
			if err := s.reg.Register(c); err != nil {
				return nil, fmt.Errorf("supervisor: registering metrics: %w", err)
			}
		}
		for _, ic := range e.Ingress {
			in, err := ingress.New(ingress.Config{Listen: ic.Listen, Target: ic.Target, MaxConns: ic.MaxConns, ProxyProtocol: ic.ProxyProtocol, Logger: s.log.With("enclave", e.Name)})
			if err != nil {
				return nil, fmt.Errorf("supervisor: enclave %s ingress %s: %w", e.Name, ic.Listen, err)
			}
			for _, c := range in.Collectors(prometheus.Labels{"enclave": e.Name, "listen": ic.Listen}) {
				if err := s.reg.Register(c); err != nil {
					return nil, fmt.Errorf("supervisor: registering metrics: %w", err)
				}
			}
			u.ings = append(u.ings, &port{in: in})
		}
		s.units = append(s.units, u)
	}
	if err := s.reg.Register(enclaveCollector{s}); err != nil {
		return nil, fmt.Errorf("supervisor: registering metrics: %w", err)
	}
	if cfg.Egress != nil && len(cfg.Egress.Routes) > 0 {
		p, err := proxy.New(*cfg.Egress, proxy.Options{Logger: s.log.With("component", "egress"), Registry: s.reg})
		if err != nil {
			return nil, fmt.Errorf("supervisor: egress: %w", err)
		}
		s.proxy = p
	}
	return s, nil
}

// Listen opens every listener (HTTP, log sinks, ingress, egress routes),
// so that a port in use fails before any enclave starts. On error what was
// opened is closed again.
func (s *Supervisor) Listen(ctx context.Context) (err error) {
	var opened []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range opened {
				ln.Close()
			}
		}
	}()
	open := func(field, addr string) (net.Listener, error) {
		ln, err := transport.Listen(ctx, addr)
		if err != nil {
			return nil, s.cfg.errf(field, "cannot listen on %s: %v; free that address (another process, or a supervisor with the same slot, may hold it) or choose another", addr, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	if s.httpLn, err = open("http", s.cfg.HTTP); err != nil {
		return err
	}
	for i, u := range s.units {
		if u.sinkLn, err = open(fmt.Sprintf("enclaves[%d].log_sink", i), u.e.LogSink); err != nil {
			return err
		}
		for k, ig := range u.ings {
			if ig.ln, err = open(fmt.Sprintf("enclaves[%d].ingress[%d].listen", i, k), u.e.Ingress[k].Listen); err != nil {
				return err
			}
		}
	}
	if s.proxy != nil {
		if err := s.proxy.Listen(ctx); err != nil {
			return s.cfg.errf("egress.routes", "%v; free that address or choose another listen address", err)
		}
	}
	s.mu.Lock()
	s.listened = true
	s.mu.Unlock()
	return nil
}

// HTTPAddr is the address of /healthz, /readyz and /metrics after Listen.
func (s *Supervisor) HTTPAddr() string { return transport.AddrOf(s.httpLn.Addr()) }

// IngressAddrs are the ingress listen addresses after Listen, per enclave.
func (s *Supervisor) IngressAddrs(enclave string) []string {
	var out []string
	for _, u := range s.units {
		if u.e.Name == enclave {
			for _, ig := range u.ings {
				out = append(out, transport.AddrOf(ig.ln.Addr()))
			}
		}
	}
	return out
}

// EgressAddrs are the egress route addresses after Listen, in the order
// of the file's routes.
func (s *Supervisor) EgressAddrs() []string {
	if s.proxy == nil {
		return nil
	}
	var out []string
	for i := range s.cfg.Egress.Routes {
		out = append(out, s.proxy.Addr(i))
	}
	return out
}

// Statuses reports every enclave's state.
func (s *Supervisor) Statuses() []Status {
	var out []Status
	for _, u := range s.units {
		u.mu.Lock()
		out = append(out, u.status)
		u.mu.Unlock()
	}
	return out
}

// Ready reports whether every enclave answers its probes and the
// supervisor is not shutting down.
func (s *Supervisor) Ready() bool {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return false
	}
	for _, st := range s.Statuses() {
		if !st.Healthy {
			return false
		}
	}
	return true
}

// Serve runs everything until ctx ends, then shuts down in order: not
// ready, ingress drained (up to DrainTimeout), enclaves terminated, log
// sinks and egress stopped. It returns after every goroutine and enclave
// it started has ended. It calls Listen if that was not done, and may be
// called once.
func (s *Supervisor) Serve(ctx context.Context) error {
	s.mu.Lock()
	listened, served := s.listened, s.served
	s.served = true
	s.mu.Unlock()
	if served {
		return errors.New("supervisor: Serve called twice; create a new Supervisor")
	}
	if !listened {
		if err := s.Listen(ctx); err != nil {
			return err
		}
	}
	if err := becomeSubreaper(); err != nil {
		s.log.Warn("enclavekit run: cannot become the reaper of orphaned enclave processes; they may linger as zombies", "err", err)
	}
	for _, a := range s.cfg.Assignments() {
		s.log.Info("enclavekit run: enclave placement", "enclave", a.Name, "cid", a.CID, "address", a.Address, "log_sink", a.LogSink)
	}
	for _, l := range s.cfg.EgressListens() {
		s.log.Info("enclavekit run: egress route", "listen", l)
	}

	// Components that outlive the enclaves: log sinks, egress, HTTP.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	defer bgWG.Wait()
	defer stopBG()
	for _, u := range s.units {
		bgWG.Go(func() {
			if err := u.sink.Serve(bg, u.sinkLn); err != nil {
				s.log.Error("enclavekit run: log sink stopped", "enclave", u.e.Name, "err", err)
			}
		})
	}
	if s.cfg.Credentials != nil {
		src := credentialSource(s.cfg.Credentials)
		for _, u := range s.units {
			bgWG.Go(func() {
				pushCredentials(bg, u.e.Address, src, s.cfg.Credentials.Interval, s.log.With("enclave", u.e.Name))
			})
		}
	}
	if s.proxy != nil {
		bgWG.Go(func() {
			if err := s.proxy.Serve(bg); err != nil {
				s.log.Error("enclavekit run: egress stopped", "err", err)
			}
		})
	}
	s.httpS = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	bgWG.Go(func() {
		if err := s.httpS.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("enclavekit run: health endpoint stopped", "err", err)
		}
	})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.httpS.Shutdown(sctx)
	}()

	// Ingress: drained by closing its listener while its accept loop
	// waits (see drainListener), then stopped by its context.
	ingCtx, stopIng := context.WithCancel(context.WithoutCancel(ctx))
	defer stopIng()
	draining := make(chan struct{})
	var ingWG sync.WaitGroup
	for _, u := range s.units {
		for _, ig := range u.ings {
			dl := &drainListener{Listener: ig.ln, draining: draining, stop: ingCtx.Done()}
			ingWG.Go(func() { ig.in.Serve(ingCtx, dl) })
		}
	}

	// The enclaves.
	var encWG sync.WaitGroup
	for _, u := range s.units {
		encWG.Go(func() { s.supervise(ctx, u) })
	}
	<-ctx.Done()

	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.m.ready.Set(0)
	s.log.Info("enclavekit run: stopping: draining ingress", "timeout", s.cfg.DrainTimeout)
	close(draining)
	for _, u := range s.units {
		for _, ig := range u.ings {
			ig.ln.Close() // new connections are refused from here on
		}
	}
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for s.openIngress() > 0 {
		if time.Now().After(deadline) {
			s.log.Warn("enclavekit run: drain timeout; closing the remaining ingress connections", "open", s.openIngress())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopIng()
	ingWG.Wait()
	// supervise terminates its enclave when ctx ends, after the drain
	// gate opens.
	close(s.drainGate())
	encWG.Wait()
	s.log.Info("enclavekit run: enclaves terminated; stopping log sinks and egress")
	return nil
}

// openIngress counts the ingress connections open now.
func (s *Supervisor) openIngress() uint64 {
	var n uint64
	for _, u := range s.units {
		for _, ig := range u.ings {
			n += ig.in.Stats().OpenConns
		}
	}
	return n
}

// drainListener lets the ingress's accept loop outlive its listener: once
// draining is closed, an Accept error waits for stop, so that the loop
// does not end (and cut its open connections) before the drain is over.
type drainListener struct {
	net.Listener
	draining <-chan struct{}
	stop     <-chan struct{}
}

func (l *drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		select {
		case <-l.draining:
			<-l.stop
		default:
		}
	}
	return c, err
}

// drainGate is closed once the ingress is drained; supervise waits for it
// before terminating an enclave at shutdown.
func (s *Supervisor) drainGate() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
	return s.gate
}

// supervise starts u's enclave, watches it, and restarts it until ctx
// ends.
func (s *Supervisor) supervise(ctx context.Context, u *unit) {
	e := u.e
	log := s.log.With("enclave", e.Name)
	backoff := s.cfg.Restart.MinBackoff
	gate := s.drainGate()
	defer u.reapPending(5 * time.Second)
	for run := 1; ; run++ {
		s.beat(u)
		if ctx.Err() != nil {
			return
		}
		if e.Debug {
			log.Warn("DEBUG MODE: starting the enclave with --debug-mode: its attestation documents carry all-zero PCRs, its console is readable from the parent, and it must never hold production secrets", "run", run)
		}
		u.ring.reset()
		u.mu.Lock()
		u.status.Run = run
		u.status.EnclaveID, u.status.ProcessID = "", 0
		u.mu.Unlock()
		s.m.runs.WithLabelValues(e.Name).Inc()
		started := s.now()
		// run-enclave is not interrupted by shutdown: an enclave it
		// started is then terminated like any other.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Health.StartTimeout)
		info, runExit, err := s.nitr.run(rctx, e)
		cancel()
		s.beat(u)
		var res runResult
		if err != nil {
			res = runResult{reason: ReasonStartFailed, detail: err.Error()}
		} else {
			u.mu.Lock()
			u.status.EnclaveID, u.status.ProcessID = info.EnclaveID, info.ProcessID
			u.mu.Unlock()
			log.Info("enclavekit run: enclave started", "run", run, "enclave_id", info.EnclaveID, "cid", info.EnclaveCID, "process_id", info.ProcessID, "cpus", info.NumberOfCPUs, "memory_mib", info.MemoryMiB)
			res = s.watch(ctx, u, info, log)
		}
		s.setHealthy(u, false)

		var termExit *ExitInfo
		if info.EnclaveID != "" && res.reason != ReasonCrashed {
			if res.reason == ReasonShutdown {
				<-gate
			}
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), terminateTimeout)
			x := s.nitr.terminate(tctx, info.EnclaveID)
			cancel()
			s.beat(u)
			termExit = &x
		}
		exitStatus, reaped := reap(info.ProcessID, time.Second)
		if !reaped {
			u.unreaped = append(u.unreaped, info.ProcessID)
		}
		u.reapPending(0)
		attrs := []any{"run", run, "reason", res.reason, "ran_for", s.now().Sub(started).Round(time.Millisecond), "run_enclave", runExit.String()}
		if info.EnclaveID != "" {
			attrs = append(attrs, "enclave_id", info.EnclaveID, "process_id", info.ProcessID)
		}
		if res.detail != "" {
			attrs = append(attrs, "detail", res.detail)
		}
		if res.lastState != "" {
			attrs = append(attrs, "last_state", res.lastState)
		}
		if exitStatus != "" {
			attrs = append(attrs, "exit", exitStatus)
		}
		if termExit != nil {
			attrs = append(attrs, "terminate_enclave", termExit.String())
		}
		attrs = append(attrs, "last_records", u.ring.snapshot())
		level := slog.LevelWarn
		if res.reason == ReasonShutdown {
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "enclavekit run: enclave run ended", attrs...)
		if s.cfg.RunLogs != "" {
			if err := s.writeRunLog(e.Name, started, run, level, attrs); err != nil {
				log.Warn("enclavekit run: cannot write the run's log file", "dir", s.cfg.RunLogs, "err", err)
			}
		}
		u.mu.Lock()
		u.status.LastEnd = res.reason
		u.mu.Unlock()
		if res.reason == ReasonShutdown || ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		u.status.Restarts++
		u.mu.Unlock()
		s.m.restarts.WithLabelValues(e.Name, res.reason).Inc()
		if res.healthyFor >= s.cfg.Restart.MaxBackoff {
			backoff = s.cfg.Restart.MinBackoff
		}
		log.Info("enclavekit run: restarting the enclave", "in", backoff, "after", res.reason)
		s.beat(u)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = nextBackoff(backoff, s.cfg.Restart.MaxBackoff)
	}
}

// writeRunLog writes the run-ended record, then each kept record on a line
// of its own, to a file of the run in RunLogs, and removes the oldest
// files of the enclave beyond RunLogsKeep.
func (s *Supervisor) writeRunLog(name string, started time.Time, run int, level slog.Level, attrs []any) error {
	var b bytes.Buffer
	h := slog.NewTextHandler(&b, nil)
	var records []string
	var rest []any
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i] == "last_records" {
			records, _ = attrs[i+1].([]string)
			continue
		}
		rest = append(rest, attrs[i], attrs[i+1])
	}
	slog.New(h).Log(context.Background(), level, "enclavekit run: enclave run ended", append([]any{"enclave", name}, rest...)...)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	file := filepath.Join(s.cfg.RunLogs, fmt.Sprintf("%s_%s_run%d.log", name, started.UTC().Format("20060102T150405.000"), run))
	if err := os.WriteFile(file, b.Bytes(), 0o640); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(s.cfg.RunLogs, name+"_*_run*.log"))
	sort.Strings(old) // the start time sorts them
	for len(old) > s.cfg.RunLogsKeep {
		os.Remove(old[0])
		old = old[1:]
	}
	return nil
}

// beat records that u's supervision made progress.
func (s *Supervisor) beat(u *unit) { u.beat.Store(s.now().UnixNano()) }

// stallBound is the longest a healthy supervision loop goes without a
// beat: each of its steps is bounded, and the longest is one of these.
func (s *Supervisor) stallBound() time.Duration {
	c := s.cfg
	return c.Health.StartTimeout + describeTimeout + terminateTimeout + c.Restart.MaxBackoff + 2*c.Health.Interval + c.Health.Timeout + 5*time.Second
}

// Live reports whether every enclave's supervision loop made progress
// within the stall bound (or has not started, or the supervisor is
// stopping). /healthz answers 503 when it does not: the process is stuck
// and restarting it is the fix.
func (s *Supervisor) Live() bool {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return true
	}
	now := s.now()
	for _, u := range s.units {
		if b := u.beat.Load(); b != 0 && now.Sub(time.Unix(0, b)) > s.stallBound() {
			return false
		}
	}
	return true
}

// nextBackoff doubles b up to max.
func nextBackoff(b, max time.Duration) time.Duration {
	if b >= max/2 {
		return max
	}
	return 2 * b
}

type runResult struct {
	reason     string
	detail     string
	lastState  string
	healthyFor time.Duration
}

// watch probes the enclave every Health.Interval until it must be
// restarted or ctx ends.
func (s *Supervisor) watch(ctx context.Context, u *unit, info EnclaveInfo, log *slog.Logger) runResult {
	hc := s.cfg.Health
	started := s.now()
	var healthySince time.Time
	failures := 0
	lastState := ""
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		// Is it still there?
		s.beat(u)
		dctx, cancel := context.WithTimeout(ctx, describeTimeout)
		list, x, err := s.nitr.describe(dctx)
		cancel()
		s.beat(u)
		if ctx.Err() != nil {
			return runResult{reason: ReasonShutdown, lastState: lastState, healthyFor: since(s.now, healthySince)}
		}
		if err == nil {
			found := false
			for _, d := range list {
				if d.EnclaveID == info.EnclaveID {
					found, lastState = true, d.State
				}
			}
			if !found || lastState != StateRunning {
				if !found {
					lastState = "absent from describe-enclaves"
				}
				return runResult{reason: ReasonCrashed, detail: "describe-enclaves: " + lastState, lastState: lastState, healthyFor: since(s.now, healthySince)}
			}
		} else {
			log.Warn("enclavekit run: describe-enclaves failed", "err", x.String())
		}
		// Does it answer?
		h, perr := s.probeFn(ctx, u.e)
		s.beat(u)
		switch {
		case ctx.Err() != nil:
			return runResult{reason: ReasonShutdown, lastState: lastState, healthyFor: since(s.now, healthySince)}
		case perr == nil:
			if healthySince.IsZero() {
				healthySince = s.now()
				log.Info("enclavekit run: enclave healthy", "enclave_id", info.EnclaveID, "version", h.Version, "after", s.now().Sub(started).Round(time.Millisecond))
				if h.Dev {
					log.Warn("enclavekit run: the enclave reports dev=true: its startup checks were overridden and it must not be trusted with production secrets", "enclave_id", info.EnclaveID)
				}
			}
			failures = 0
			s.setHealthy(u, true)
			u.mu.Lock()
			u.health = &h
			u.mu.Unlock()
		default:
			failures++
			s.m.probeFailures.WithLabelValues(u.e.Name).Inc()
			if !healthySince.IsZero() {
				log.Warn("enclavekit run: health probe failed", "failures", failures, "of", hc.Failures, "err", perr)
				if failures >= hc.Failures {
					return runResult{reason: ReasonUnhealthy, detail: perr.Error(), lastState: lastState, healthyFor: since(s.now, healthySince)}
				}
				s.setHealthy(u, false)
			} else if s.now().Sub(started) >= hc.StartTimeout {
				return runResult{reason: ReasonStartTimeout, detail: perr.Error(), lastState: lastState}
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return runResult{reason: ReasonShutdown, lastState: lastState, healthyFor: since(s.now, healthySince)}
		}
	}
}

func since(now func() time.Time, t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return now().Sub(t)
}

// probe calls enclavekit.health on a fresh connection.
func (s *Supervisor) probe(ctx context.Context, e *Enclave) (protocol.HealthResponse, error) {
	var h protocol.HealthResponse
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Health.Timeout)
	defer cancel()
	c, err := parent.Dial(ctx, e.Address, parent.Options{PoolSize: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return h, err
	}
	defer c.Close()
	// Ask for the clock too; enclaves that predate it ignore the request.
	if err := c.Call(ctx, protocol.MethodHealth, &protocol.HealthRequest{Clock: true}, &h); err != nil {
		return protocol.HealthResponse{}, err
	}
	return h, nil
}

func (s *Supervisor) setHealthy(u *unit, ok bool) {
	u.mu.Lock()
	u.status.Healthy = ok
	u.mu.Unlock()
	v := 0.0
	if ok {
		v = 1
	}
	s.m.up.WithLabelValues(u.e.Name).Set(v)
	r := 0.0
	if s.Ready() {
		r = 1
	}
	s.m.ready.Set(r)
}

// handler serves /healthz, /readyz and /metrics.
func (s *Supervisor) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.Live() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "stalled: an enclave's supervision made no progress within", s.stallBound())
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		code := http.StatusOK
		if !s.Ready() {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(struct {
			Ready    bool     `json:"ready"`
			Enclaves []Status `json:"enclaves"`
		}{code == http.StatusOK, s.Statuses()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}
