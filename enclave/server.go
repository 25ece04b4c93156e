package enclave

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Handler serves one method. body is the request body (untrusted bytes from
// the parent); the returned bytes are the response body. A returned error
// crosses the enclave boundary only as its code (protocol.CodeOf) and that
// code's fixed message; its text is logged inside the enclave. Return or
// wrap a protocol sentinel (protocol.ErrBadRequest…) to choose the code.
//
// ctx is canceled when the handler timeout expires, when the server closes
// the connection (a protocol violation, a reset, a failed write), and when a
// graceful shutdown runs out of time; handlers must return promptly once it
// is done. A peer that merely stops sending (EOF, which may be a half-close)
// still gets its responses, so in-flight handlers are not canceled then. A panicking handler is recovered: the caller gets
// code 7 (internal) and the stack is logged.
type Handler func(ctx context.Context, body []byte) ([]byte, error)

// ErrServerStarted is returned by Serve when it was already called.
var ErrServerStarted = errors.New("enclave: Serve already called on this server")

// Server is the enclave's request server. Create it with New, register
// methods with Handle, then call Listen (optional, to learn Addr) and Serve.
type Server struct {
	cfg      Config
	log      *slog.Logger
	checks   []protocol.CheckResult
	started  time.Time
	handlers atomic.Pointer[map[string]Handler]
	hmu      sync.Mutex // serializes Handle

	mu      sync.Mutex
	ln      net.Listener
	serving bool
	conns   map[*conn]struct{}

	connWG sync.WaitGroup // one per connection goroutine
	// The read watch (see serveRequest), opened by the first connection
	// that can use it: nil if none could, or it failed to open.
	watchOnce sync.Once
	watch     *readWatch
	budget    *byteBudget // Config.MaxInFlightBytes

	peerLogs       peerLimiter // bounds the records peers can cause
	suppressedLogs atomic.Uint64

	nsm nsmState // the NSM checks of Listen and Serve, and the clock

	open     atomic.Int64
	evicting atomic.Int64 // evicted connections not yet removed
	total    atomic.Uint64
	rejected atomic.Uint64
	evicted  atomic.Uint64
	requests atomic.Uint64
	failures atomic.Uint64
	panics   atomic.Uint64
	dropped  atomic.Uint64
	handoffs atomic.Uint64 // read turns passed to another goroutine
}

// Stats are the server's counters since New.
type Stats struct {
	// OpenConns is the number of connections being served now.
	OpenConns uint64
	// TotalConns counts connections accepted and served.
	TotalConns uint64
	// RejectedConns counts connections closed at once because MaxConns
	// connections were already open and none could be evicted (see
	// Config.MaxConns).
	RejectedConns uint64
	// EvictedConns counts open connections closed to make room for a new
	// one at MaxConns: the ones idle or stalled the longest.
	EvictedConns uint64
	// Requests counts requests dispatched to a handler.
	Requests uint64
	// Errors counts error responses (including bad requests and unknown methods).
	Errors uint64
	// Panics counts recovered handler panics.
	Panics uint64
	// DroppedConns counts connections closed by the server for a protocol
	// violation or a timeout (bad frame, slowloris, no progress, write timeout).
	DroppedConns uint64
	// InFlightBytes is the number of bytes charged against
	// Config.MaxInFlightBytes now: requests being handled and responses
	// being written.
	InFlightBytes uint64
	// BudgetWaits counts requests whose connection stopped reading to wait
	// for room in MaxInFlightBytes (counted when the wait starts).
	BudgetWaits uint64
	// SuppressedLogs counts log records caused by peers (bad or failed
	// requests, dropped connections) that the rate limit left out.
	SuppressedLogs uint64
	// ConsoleDropped counts log records the console dropped because it did
	// not keep up, when Config.Logger's handler reports them (a LogHandler
	// or a ConsoleHandler); logging never waits for the console.
	ConsoleDropped uint64
	// ClockStats: the measured clock skew and the NSM re-check counters.
	ClockStats
}

// New validates cfg, runs the startup checks (those of StartupChecks, read from
// cfg.SysFS) and returns a server with the built-in methods
// enclavekit.health and enclavekit.attest registered. A failed check
// returns a *CheckError (matching ErrStartupCheck) unless cfg.Dev is set.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sysfs := cfg.SysFS
	if sysfs == nil {
		sysfs = os.DirFS("/")
	}
	checks, err := RunChecks(sysfs, StartupChecks(), cfg.Dev, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if cfg.Dev {
		cfg.Logger.Warn("DEVELOPMENT MODE (--dev): startup checks are warnings only and health reports dev=true; do not trust this enclave")
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		checks:  checks,
		started: time.Now(),
		conns:   make(map[*conn]struct{}),
		budget:  newByteBudget(cfg.MaxInFlightBytes),
	}
	s.nsm.clock.maxAge = 2*cfg.ClockCheckInterval + cfg.NSMTimeout
	s.handlers.Store(&map[string]Handler{})
	s.Handle(protocol.MethodHealth, s.handleHealth)
	s.Handle(protocol.MethodAttest, s.handleAttest)
	return s, nil
}

// Handle registers h for method. It panics if method is empty, longer than
// protocol.MaxMethodLen, already registered (the built-in enclavekit.*
// methods included), or h is nil, like net/http's ServeMux. It is safe to
// call while the server is serving.
func (s *Server) Handle(method string, h Handler) {
	switch {
	case method == "":
		panic("enclave: Handle with an empty method name")
	case len(method) > protocol.MaxMethodLen:
		panic(fmt.Sprintf("enclave: method name %q is %d bytes, the limit is %d", method, len(method), protocol.MaxMethodLen))
	case h == nil:
		panic("enclave: Handle(" + method + ") with a nil handler")
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	old := *s.handlers.Load()
	if _, dup := old[method]; dup {
		panic("enclave: method " + method + " registered twice")
	}
	m := make(map[string]Handler, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[method] = h
	s.handlers.Store(&m)
}

// Checks returns the startup check results (failed ones are marked
// Overridden in dev mode): the file checks of New, then, once Listen or
// Serve has run them, the NSM checks, whose "nsm" and "clock" results
// follow the latest clock re-check.
func (s *Server) Checks() []protocol.CheckResult {
	return append(append([]protocol.CheckResult(nil), s.checks...), s.nsmResults()...)
}

// Dev reports whether the server runs with the development override.
func (s *Server) Dev() bool { return s.cfg.Dev }

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		OpenConns:     uint64(max(s.open.Load(), 0)),
		TotalConns:    s.total.Load(),
		RejectedConns: s.rejected.Load(),
		EvictedConns:  s.evicted.Load(),
		Requests:      s.requests.Load(),
		Errors:        s.failures.Load(),
		Panics:        s.panics.Load(),
		DroppedConns:  s.dropped.Load(),
		InFlightBytes: uint64(max(s.budget.inUse(), 0)),
		BudgetWaits:   s.budget.waits.Load(),

		SuppressedLogs: s.suppressedLogs.Load(),
		ConsoleDropped: s.consoleDropped(),
		ClockStats:     s.clockStats(),
	}
}

// consoleDropped reads the console's dropped-records count from the
// logger's handler, when it keeps one.
func (s *Server) consoleDropped() uint64 {
	if d, ok := s.log.Handler().(consoleDropper); ok {
		return d.ConsoleDropped()
	}
	return 0
}

// Listen opens the listener on Config.Addr, so that Addr can report the
// chosen port (tcp://127.0.0.1:0) before Serve runs. Serve calls it when it
// has not been called. It first runs the NSM startup checks (nsm, debug,
// clock; once per server) and returns their *CheckError, without
// listening, when one fails and Config.Dev is not set.
func (s *Server) Listen(ctx context.Context) error {
	if err := s.startNSMChecks(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return fmt.Errorf("enclave: already listening on %s", transport.AddrOf(s.ln.Addr()))
	}
	ln, err := transport.Listen(ctx, s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("enclave: listening on %s (Config.Addr): %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the listener's address once Listen (or Serve) has opened it,
// else nil. Format it with transport.AddrOf.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve listens on Config.Addr (unless Listen was called) and serves until
// ctx is canceled or the listener fails; see ServeListener.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		if err := s.Listen(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		ln = s.ln
		s.mu.Unlock()
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves connections accepted from ln until ctx is canceled or
// ln fails, then shuts down gracefully: it closes ln (no new connections),
// stops reading new requests, lets in-flight requests finish and write their
// responses for up to Config.DrainTimeout, then cancels the remaining
// handlers, closes every connection and waits for all of the server's
// goroutines. It returns nil after a shutdown caused by ctx, or the
// listener's error. A Server serves once.
//
// It first runs the NSM startup checks unless Listen already did (on a
// refusal it closes ln and returns the *CheckError), and while serving it
// re-checks the clock every Config.ClockCheckInterval.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	if err := s.startNSMChecks(ctx); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return ErrServerStarted
	}
	s.serving = true
	s.ln = ln
	s.mu.Unlock()

	s.log.Info("enclave server listening", "addr", transport.AddrOf(ln.Addr()), "dev", s.cfg.Dev,
		"max_conns", s.cfg.MaxConns, "max_in_flight", s.cfg.MaxInFlight, "max_in_flight_bytes", s.cfg.MaxInFlightBytes)

	// hard is canceled when draining is over: it is the parent of every
	// connection's and handler's context.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopClose := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopClose()
	if s.cfg.Attester != nil {
		defer s.watchClock(ctx)()
	}

	defer s.closeReadWatch() // after shutdown: no connection is left
	err := s.acceptLoop(ctx, hard, ln)
	ln.Close()
	if ctx.Err() != nil {
		err = nil
	}
	s.shutdown(cancelHard)
	return err
}

// acceptLoop accepts until ln fails. At the cap it evicts a connection to
// make room (see Config.MaxConns); a connection that still finds no room
// is closed at once and counted.
func (s *Server) acceptLoop(ctx, hard context.Context, ln net.Listener) error {
	acc := transport.Acceptor{Listener: ln, Name: "enclave server", Logger: s.log}
	rejectLog := transport.LogLimiter{Every: rejectWarnEvery}
	for {
		nc, err := acc.Accept(ctx)
		if err != nil {
			if errors.Is(err, transport.ErrStopped) {
				return err
			}
			s.log.Error("enclave server: accept failed; shutting down", "err", err)
			return fmt.Errorf("enclave: accept: %w", err)
		}
		if s.open.Load()-s.evicting.Load() >= int64(s.cfg.MaxConns) && (s.cfg.RefuseAtCap || !s.evictOne()) {
			n := s.rejected.Add(1)
			nc.Close()
			rejectLog.Log(ctx, s.log, slog.LevelWarn, "enclave server: connections rejected: MaxConns reached (closed at once, not queued)",
				"max_conns", s.cfg.MaxConns, "rejected_total", n)
			continue
		}
		c := newConn(s, hard, nc)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.open.Add(1)
		s.total.Add(1)
		s.connWG.Add(1)
		go c.serve()
	}
}

// rejectWarnEvery rate-limits the warning about rejected connections, so a
// flood of them cannot flood the log.
const rejectWarnEvery = 10 * time.Second

// shutdown drains the connections, then forces them closed.
func (s *Server) shutdown(cancelHard context.CancelFunc) {
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.drain()
	}
	s.mu.Unlock()
	s.log.Info("enclave server: stopped accepting; draining", "open_conns", n, "drain_timeout", s.cfg.DrainTimeout)

	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		s.log.Info("enclave server: drained")
		return
	case <-t.C:
	}
	s.mu.Lock()
	left := len(s.conns)
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	cancelHard()
	s.log.Warn("enclave server: drain timeout expired; canceled remaining requests and closed connections",
		"conns", left, "drain_timeout", s.cfg.DrainTimeout)
	// Handlers must return once their context is canceled; say so loudly
	// if one does not, since Serve cannot return before it does.
	for {
		t.Reset(ignoredCancelWarnEvery)
		select {
		case <-done:
			return
		case <-t.C:
			s.log.Error("enclave server: still waiting for handlers that ignore their canceled context; fix the handler (it must return when ctx is done)",
				"open_conns", s.open.Load())
		}
	}
}

// ignoredCancelWarnEvery is how often shutdown reports handlers that keep
// running after their context was canceled.
const ignoredCancelWarnEvery = 5 * time.Second

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	// open first: open-evicting may then count one too few for a moment,
	// never one too many (which would refuse a newcomer for nothing).
	s.open.Add(-1)
	if c.evicted {
		s.evicting.Add(-1)
	}
	s.mu.Unlock()
	s.connWG.Done()
}

// evictOne closes the open connection that matters least (see
// Config.MaxConns and conn.evictionRank) to make room for a new one, and
// reports whether there was one. The evicted connection leaves the count
// of open ones when its goroutine ends; until then it counts in
// s.evicting, so the newcomer is admitted at once.
func (s *Server) evictOne() bool {
	s.mu.Lock()
	var victim *conn
	var vTier int
	var vSince int64
	var vFrames uint64
	for c := range s.conns {
		if c.evicted {
			continue
		}
		tier, since, frames := c.evictionRank()
		if victim == nil || tier < vTier || (tier == vTier && (since < vSince || since == vSince && frames < vFrames)) {
			victim, vTier, vSince, vFrames = c, tier, since, frames
		}
	}
	if victim != nil {
		victim.evicted = true
		s.evicting.Add(1)
	}
	s.mu.Unlock()
	if victim == nil {
		return false
	}
	s.evicted.Add(1)
	victim.evict()
	return true
}

// readWatch returns the server's read watch, opening it on first use, or
// nil if it cannot be opened (lone requests then pass the turn at once).
func (s *Server) readWatch() *readWatch {
	s.watchOnce.Do(func() {
		w, err := newReadWatch()
		if errors.Is(err, errors.ErrUnsupported) {
			return
		}
		if err != nil {
			s.log.Warn("enclave server: no read watch (each request will wake a second goroutine to keep reading its connection)", "err", err)
			return
		}
		s.watch = w
	})
	return s.watch
}

// closeReadWatch closes the read watch, if one was opened; call it once
// every connection has ended.
func (s *Server) closeReadWatch() {
	s.watchOnce.Do(func() {}) // none can open after this
	if s.watch != nil {
		s.watch.close()
	}
}
