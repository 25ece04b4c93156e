package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/enclavekit/enclavekit/transport"
)

// Dialer connects to a destination; *net.Dialer implements it. The proxy
// only ever passes an "IP:port" literal, never a name. Tests inject a fake.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Options are the proxy's injectable dependencies. The zero value is
// valid: every nil field takes the default documented on it.
type Options struct {
	// Logger receives refusals (Warn), reloads and lifecycle (Info) and
	// per-connection errors (Debug). nil means slog.Default().
	Logger *slog.Logger
	// Registry is where the metrics are registered and what /metrics
	// serves. nil means a new registry of the proxy's own.
	Registry *prometheus.Registry
	// Resolver resolves destination names. nil means net.DefaultResolver.
	Resolver Resolver
	// Dialer connects to destination IPs. nil means a net.Dialer (with TCP
	// keep-alives). It is an interface, not a Dial func as elsewhere in
	// the module, because the proxy dials "IP:port" literals by network
	// (tcp4, tcp6), as net.Dialer.DialContext does.
	Dialer Dialer
	// Listen opens route and metrics listeners. nil means transport.Listen.
	Listen func(ctx context.Context, addr string) (net.Listener, error)
}

// Proxy is a running (or ready) egress proxy. Create it with New, then call
// Serve; Reload may be called at any time from any goroutine.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	m      *metrics
	res    Resolver
	dialer Dialer
	listen func(context.Context, string) (net.Listener, error)
	allow  atomic.Pointer[Allowlist]
	routes []*route
	open   atomic.Int64
	brPool sync.Pool

	mu        sync.Mutex
	listening bool
	served    bool
	lns       []net.Listener
	metricsLn net.Listener

	conns     sync.WaitGroup
	kill      context.Context // cancelled to force-close every connection
	killFn    context.CancelFunc
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

type route struct {
	Route
	host      string // fixed destination, when To is set
	port      int
	m         routeMetrics
	up, down  func(int64)
	refusedBy func(reason string) prometheus.Counter
	errorsBy  func(kind string) prometheus.Counter
	// refuseLogs rate-limit the refusal lines, one limiter per reason (""
	// for any other), so that a flood of one kind cannot flood the log
	// nor hide the first refusal of another.
	refuseLogs map[string]*transport.LogLimiter
}

// refusalReasons are the reasons a refusal is logged with.
var refusalReasons = []string{ReasonNotAllowlisted, ReasonDeniedIP, ReasonResolve, ReasonNoAddress, ReasonMaxConns,
	ReasonBadRequest, ReasonMethod, ReasonHeaderTooLarge, ReasonTimeout, ""}

// refusal logs a refused connection, rate-limited per reason.
func (p *Proxy) refusal(r *route, reason string, args ...any) {
	l := r.refuseLogs[reason]
	if l == nil {
		l = r.refuseLogs[""]
	}
	l.Log(context.Background(), p.log, slog.LevelWarn, "proxy: connection refused", append([]any{"route", r.Name, "reason", reason}, args...)...)
}

// New checks cfg (see Config.Validate), applies defaults and registers the
// metrics. It opens nothing; Listen or Serve do.
func New(cfg Config, opts Options) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Proxy{cfg: cfg, log: opts.Logger, reg: opts.Registry, res: opts.Resolver, dialer: opts.Dialer, listen: opts.Listen}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.reg == nil {
		p.reg = prometheus.NewRegistry()
	}
	if p.res == nil {
		p.res = net.DefaultResolver
	}
	if p.dialer == nil {
		p.dialer = &net.Dialer{}
	}
	if p.listen == nil {
		p.listen = transport.Listen
	}
	m, err := newMetrics(p.reg)
	if err != nil {
		return nil, fmt.Errorf("proxy: registering metrics: %w", err)
	}
	p.m = m
	al, err := NewAllowlist(cfg.Allowlist)
	if err != nil {
		return nil, err
	}
	p.allow.Store(al)
	for _, rc := range cfg.Routes {
		r := &route{Route: rc, m: m.forRoute(rc.Name)}
		if rc.To != "" {
			r.host, r.port, _ = SplitHostPort(rc.To) // checked by Validate
		}
		r.up = func(n int64) { r.m.upstream.Add(float64(n)) }
		r.down = func(n int64) { r.m.downstream.Add(float64(n)) }
		name := rc.Name
		r.refusedBy = func(reason string) prometheus.Counter { return m.refused.WithLabelValues(name, reason) }
		r.errorsBy = func(kind string) prometheus.Counter { return m.errors.WithLabelValues(name, kind) }
		r.refuseLogs = make(map[string]*transport.LogLimiter, len(refusalReasons))
		for _, reason := range refusalReasons {
			r.refuseLogs[reason] = &transport.LogLimiter{}
		}
		p.routes = append(p.routes, r)
	}
	size := min(max(cfg.Limits.MaxHeaderBytes, 16), 64<<10)
	p.brPool.New = func() any { return bufio.NewReaderSize(nil, size) }
	p.kill, p.killFn = context.WithCancel(context.Background())
	p.closed = make(chan struct{})
	return p, nil
}

// Registry returns the registry holding the proxy's metrics.
func (p *Proxy) Registry() *prometheus.Registry { return p.reg }

// Listen opens every route's listener and the metrics listener; Serve
// calls it if it was not called before. Calling Listen first lets a caller
// learn the ports picked for "tcp://127.0.0.1:0" (see Addr) before Serve.
func (p *Proxy) Listen(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listening {
		return nil
	}
	if err := p.checkRoutes(ctx); err != nil {
		return err
	}
	var lns []net.Listener
	fail := func(err error) error {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	for _, r := range p.routes {
		ln, err := p.listen(ctx, r.Listen)
		if err != nil {
			return fail(fmt.Errorf("proxy: route %s: %w", r.Name, err))
		}
		lns = append(lns, ln)
	}
	if p.cfg.Metrics != "" {
		ln, err := p.listen(ctx, p.cfg.Metrics)
		if err != nil {
			return fail(fmt.Errorf("proxy: metrics: %w", err))
		}
		p.metricsLn = ln
	}
	p.lns = lns
	p.listening = true
	return nil
}

// Addr returns the transport address route i listens on, once listening
// (after Listen), or "" before.
func (p *Proxy) Addr(i int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i < 0 || i >= len(p.lns) {
		return ""
	}
	return transport.AddrOf(p.lns[i].Addr())
}

// MetricsAddr returns the transport address of /metrics, or "".
func (p *Proxy) MetricsAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.metricsLn == nil {
		return ""
	}
	return transport.AddrOf(p.metricsLn.Addr())
}

// Close closes the listeners and every open connection at once, and makes
// Serve return without a drain. It is for a Proxy that was Listened but not
// Served, or to cut a drain short; cancelling Serve's context is the
// graceful way.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	p.killFn()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ln := range p.lns {
		ln.Close()
	}
	if p.metricsLn != nil {
		p.metricsLn.Close()
	}
	return nil
}

// Serve accepts connections on every route until ctx is done, then stops
// accepting and drains: open connections get Limits.DrainTimeout to finish
// before they are closed. It returns nil after a drain, or the error that
// prevented listening.
func (p *Proxy) Serve(ctx context.Context) error {
	p.mu.Lock()
	if p.served {
		p.mu.Unlock()
		return errors.New("proxy: Serve called twice")
	}
	p.served = true
	p.mu.Unlock()
	if err := p.Listen(ctx); err != nil {
		return err
	}
	defer p.killFn()

	var srv *http.Server
	var srvDone chan struct{}
	if p.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}))
		srv = newMetricsServer(mux, slog.NewLogLogger(p.log.Handler(), slog.LevelDebug))
		srvDone = make(chan struct{})
		go func() {
			defer close(srvDone)
			srv.Serve(newCapListener(p.metricsLn, MetricsMaxConns))
		}()
	}

	// Accepting stops when ctx ends or Close is called (p.kill), also
	// during a pause between retries.
	actx, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	defer context.AfterFunc(p.kill, stopAccepting)()
	var accepting sync.WaitGroup
	for i, ln := range p.lns {
		r := p.routes[i]
		p.log.Info("proxy: route listening", "route", r.Name, "listen", transport.AddrOf(ln.Addr()), "to", r.To, "connect", r.Connect)
		accepting.Go(func() { p.acceptLoop(actx, r, ln) })
	}
	select {
	case <-ctx.Done():
	case <-p.closed:
	}
	for _, ln := range p.lns {
		ln.Close()
	}
	accepting.Wait()

	p.log.Info("proxy: draining", "open", p.open.Load(), "timeout", p.cfg.Limits.DrainTimeout)
	drained := make(chan struct{})
	go func() {
		p.conns.Wait()
		close(drained)
	}()
	t := time.NewTimer(p.cfg.Limits.DrainTimeout)
	select {
	case <-drained:
		t.Stop()
	case <-t.C:
		p.log.Warn("proxy: drain timeout, closing connections", "open", p.open.Load())
		p.killFn()
		<-drained
	}
	if srv != nil {
		srv.Close()
		<-srvDone
	}
	p.log.Info("proxy: stopped")
	return nil
}

// acceptLoop serves route r's listener until ctx ends or the listener is
// closed. Transient accept errors are retried (transport.Acceptor); any
// other ends this route, which is logged, while the others go on.
func (p *Proxy) acceptLoop(ctx context.Context, r *route, ln net.Listener) {
	acc := transport.Acceptor{Listener: ln, Name: "proxy", Logger: p.log.With("route", r.Name),
		OnError: func(error) { r.errorsBy("accept").Inc() }}
	for {
		c, err := acc.Accept(ctx)
		if err != nil {
			if !errors.Is(err, transport.ErrStopped) {
				ln.Close()
				p.log.Error("proxy: the route's listener failed; it accepts no more connections until the proxy is restarted",
					"route", r.Name, "listen", r.Listen, "err", err)
			}
			return
		}
		if n := p.open.Add(1); n > int64(p.cfg.Limits.MaxConns) {
			p.open.Add(-1)
			r.refusedBy(ReasonMaxConns).Inc()
			p.refusal(r, ReasonMaxConns, "max_conns", p.cfg.Limits.MaxConns, "client", c.RemoteAddr())
			if r.Connect {
				// A fresh socket's buffer takes this at once; the short
				// deadline keeps the accept loop from ever stalling on it.
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				c.Write(response(http.StatusServiceUnavailable, "too many connections"))
			}
			c.Close()
			continue
		}
		r.m.total.Inc()
		r.m.open.Inc()
		p.conns.Add(1)
		go p.handle(r, c)
	}
}

// refused logs (rate-limited) and counts a refusal and, on a CONNECT
// route, answers it.
func (p *Proxy) refused(r *route, c net.Conn, dest, reason, detail string, status int) {
	r.refusedBy(reason).Inc()
	p.refusal(r, reason, "destination", dest, "detail", detail, "client", c.RemoteAddr())
	if r.Connect && status != 0 {
		c.SetWriteDeadline(time.Now().Add(p.cfg.Limits.HandshakeTimeout))
		c.Write(response(status, http.StatusText(status)))
	}
}

func (p *Proxy) handle(r *route, c net.Conn) {
	defer func() {
		// A panic (in an injected Resolver or Dialer, say) ends this
		// connection, not the process, and still gives its slot back:
		// otherwise every panic would leak one MaxConns slot and a Serve
		// drain would wait forever. c and the destination conn are closed
		// by the defers below, which have run by now.
		if v := recover(); v != nil {
			r.errorsBy("panic").Inc()
			p.log.Error("proxy: panic serving connection", "route", r.Name, "panic", v, "stack", string(debug.Stack()))
		}
		p.open.Add(-1)
		r.m.open.Dec()
		p.conns.Done()
	}()
	stop := context.AfterFunc(p.kill, func() { c.Close() })
	defer stop()
	defer c.Close()

	host, port := r.host, r.port
	var br *bufio.Reader
	if r.Connect {
		br = p.brPool.Get().(*bufio.Reader)
		br.Reset(c)
		defer func() {
			if br != nil {
				br.Reset(nil)
				p.brPool.Put(br)
			}
		}()
		c.SetReadDeadline(time.Now().Add(p.cfg.Limits.HandshakeTimeout))
		var err error
		host, port, err = ReadConnect(br, p.cfg.Limits.MaxHeaderBytes)
		if err != nil {
			var ce *ConnectError
			if errors.As(err, &ce) {
				p.refused(r, c, "", ce.Reason, ce.Detail, ce.Status)
			}
			return
		}
		c.SetReadDeadline(time.Time{})
	}
	dest := net.JoinHostPort(host, strconv.Itoa(port))

	start := time.Now()
	dctx, cancel := context.WithTimeout(p.kill, p.cfg.Limits.DialTimeout)
	ips, err := p.allow.Load().Check(dctx, p.res, p.cfg.Network, host, port)
	if err != nil {
		cancel()
		re := &RefusedError{Reason: ReasonNotAllowlisted, Detail: err.Error()}
		errors.As(err, &re)
		status := http.StatusForbidden
		if re.Reason == ReasonResolve || re.Reason == ReasonNoAddress {
			status = http.StatusBadGateway
		}
		p.refused(r, c, dest, re.Reason, re.Detail, status)
		return
	}
	up, err := p.dialIPs(dctx, ips, port)
	cancel()
	if err != nil {
		r.errorsBy("dial").Inc()
		p.log.Warn("proxy: dial failed", "route", r.Name, "destination", dest, "err", err)
		if r.Connect {
			status := http.StatusBadGateway
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
				status = http.StatusGatewayTimeout
			}
			c.SetWriteDeadline(time.Now().Add(p.cfg.Limits.HandshakeTimeout))
			c.Write(response(status, http.StatusText(status)))
		}
		return
	}
	r.m.dial.Observe(time.Since(start).Seconds())
	stopUp := context.AfterFunc(p.kill, func() { up.Close() })
	defer stopUp()
	defer up.Close()

	if r.Connect {
		c.SetWriteDeadline(time.Now().Add(p.cfg.Limits.HandshakeTimeout))
		if _, err := c.Write(established); err != nil {
			return
		}
		c.SetWriteDeadline(time.Time{})
		// Bytes the client sent right after its request (a TLS
		// ClientHello, typically) are already in br.
		// The relay's idle watchdog is not running yet, so bound this
		// write: a destination that never reads must not hold the
		// connection (and its MaxConns slot) forever.
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			up.SetWriteDeadline(time.Now().Add(p.cfg.Limits.IdleTimeout))
			if _, err := up.Write(b); err != nil {
				r.errorsBy("relay").Inc()
				p.log.Debug("proxy: relay", "route", r.Name, "destination", dest, "err", err)
				return
			}
			up.SetWriteDeadline(time.Time{})
			r.up(int64(n))
		}
		br.Reset(nil)
		p.brPool.Put(br)
		br = nil
	}
	relay := transport.Relay{Idle: p.cfg.Limits.IdleTimeout, CountAToB: r.up, CountBToA: r.down}
	_, _, err = relay.Run(p.kill, c, up)
	switch {
	case errors.Is(err, transport.ErrIdle):
		r.errorsBy("idle_timeout").Inc()
		p.log.Debug("proxy: idle timeout", "route", r.Name, "destination", dest)
	case err != nil && p.kill.Err() == nil:
		r.errorsBy("relay").Inc()
		p.log.Debug("proxy: relay", "route", r.Name, "destination", dest, "err", err)
	}
}

// dialIPs tries each address in turn within ctx.
func (p *Proxy) dialIPs(ctx context.Context, ips []netip.Addr, port int) (net.Conn, error) {
	var first error
	for _, ip := range ips {
		c, err := p.dialer.DialContext(ctx, p.cfg.Network, netip.AddrPortFrom(ip, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if first == nil {
		first = io.ErrUnexpectedEOF // unreachable: Check returns at least one address
	}
	return nil, first
}

// Reload replaces the allowlist with cfg's, atomically: connections already
// open are not touched, new ones are checked against the new list. It
// fails, keeping the old list, if cfg's allowlist is invalid or no longer
// permits a running route's fixed destination. Changes to routes, limits
// and metrics need a restart and are only logged.
func (p *Proxy) Reload(cfg Config) error {
	al, err := NewAllowlist(cfg.Allowlist)
	if err != nil {
		return err
	}
	for i, r := range p.routes {
		if r.To != "" && !al.Permits(r.host, r.port) {
			return fieldErr(fmt.Sprintf("routes[%d].to", i), "%s would no longer be on the allowlist; keeping the old allowlist", r.To)
		}
	}
	old := p.allow.Swap(al)
	p.log.Info("proxy: allowlist reloaded", "entries", al.Len(), "previous_entries", old.Len())
	if len(cfg.Routes) > 0 && !sameRoutes(cfg.withDefaults().Routes, p.cfg.Routes) {
		p.log.Warn("proxy: route changes take effect after a restart")
	}
	return nil
}

func sameRoutes(a, b []Route) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// routeCheckTimeout bounds the name resolution of the start-up route check.
const routeCheckTimeout = 5 * time.Second

// checkRoutes refuses to start a fixed route whose destination the
// denylist would refuse on every connection (for example "localhost:443",
// which resolves to loopback): such a route would start fine and then
// fail every connection. A name that does not resolve now is only logged,
// since DNS may not be ready at boot; each connection checks again.
func (p *Proxy) checkRoutes(ctx context.Context) error {
	al := p.allow.Load()
	for i, r := range p.routes {
		if r.To == "" {
			continue
		}
		host, port, err := SplitHostPort(r.To)
		if err != nil {
			return err // Validate checked it
		}
		cctx, cancel := context.WithTimeout(ctx, routeCheckTimeout)
		_, err = al.Check(cctx, p.res, p.cfg.Network, host, port)
		cancel()
		var re *RefusedError
		switch {
		case err == nil:
		case errors.As(err, &re) && re.Reason == ReasonDeniedIP:
			return fieldErr(fmt.Sprintf("routes[%d].to", i), "%s %s, which the denylist refuses on every connection; "+
				"if you mean it, allowlist that exact address and port", r.To, re.Detail)
		default:
			p.log.Warn("proxy: route destination cannot be checked now; every connection checks it again", "route", r.Name, "to", r.To, "err", err)
		}
	}
	return nil
}
