package parent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Defaults of PoolOptions.
const (
	DefaultProbeInterval    = 2 * time.Second
	DefaultProbeTimeout     = time.Second
	DefaultFailThreshold    = 3
	DefaultDiscoverInterval = 10 * time.Second
	// MaxAddrs bounds PoolOptions.Addrs and what Discover returns.
	MaxAddrs = 256
)

// ErrNoHealthyEnclave is returned by Pool calls when no enclave of the pool
// is in service.
var ErrNoHealthyEnclave = errors.New("parent: no healthy enclave in the pool")

// PoolOptions configures a Pool. Exactly one of Addrs and Discover is set
// (required); every other zero field takes the default documented on it.
type PoolOptions struct {
	// Addrs are the enclave server addresses ("vsock://16:5000",
	// "tcp://127.0.0.1:5000"), fixed for the pool's life; at most MaxAddrs.
	Addrs []string
	// Discover returns the current addresses; it is called at NewPool and
	// then every DiscoverInterval. Enclaves that disappear from its answer
	// are closed; new ones join after their first successful probe. An
	// error keeps the current set.
	Discover func(ctx context.Context) ([]string, error)
	// DiscoverInterval is the time between Discover calls. 0 means
	// DefaultDiscoverInterval (10s).
	DiscoverInterval time.Duration
	// ProbeInterval is the time between health probes
	// (enclavekit.health) of each enclave. 0 means DefaultProbeInterval
	// (2s).
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, dial included. 0 means
	// DefaultProbeTimeout (1s).
	ProbeTimeout time.Duration
	// FailThreshold is the number of consecutive failed probes that take an
	// enclave out of service. One successful probe puts it back. 0 means
	// DefaultFailThreshold (3).
	FailThreshold int
	// Client configures the Client of each enclave; its zero value takes
	// Options' defaults, and a nil Client.Logger means Logger.
	Client Options
	// Logger receives membership changes. nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o PoolOptions) Validate() error {
	switch {
	case (len(o.Addrs) == 0) == (o.Discover == nil):
		return fmt.Errorf("%w: PoolOptions needs exactly one of Addrs and Discover", ErrConfig)
	case len(o.Addrs) > MaxAddrs:
		return fieldErr("PoolOptions.Addrs", fmt.Sprintf("%d addresses", len(o.Addrs)), "above MaxAddrs (%d)", MaxAddrs)
	case o.DiscoverInterval < 0:
		return fieldErr("PoolOptions.DiscoverInterval", o.DiscoverInterval, "negative (0 means the default, %v)", DefaultDiscoverInterval)
	case o.ProbeInterval < 0:
		return fieldErr("PoolOptions.ProbeInterval", o.ProbeInterval, "negative (0 means the default, %v)", DefaultProbeInterval)
	case o.ProbeTimeout < 0:
		return fieldErr("PoolOptions.ProbeTimeout", o.ProbeTimeout, "negative (0 means the default, %v)", DefaultProbeTimeout)
	case o.FailThreshold < 0:
		return fieldErr("PoolOptions.FailThreshold", o.FailThreshold, "negative (0 means the default, %d)", DefaultFailThreshold)
	}
	for _, a := range o.Addrs {
		if _, err := transport.ParseAddr(a); err != nil {
			return fmt.Errorf("%w: PoolOptions.Addrs: %w", ErrConfig, err)
		}
	}
	return o.Client.Validate()
}

func (o PoolOptions) withDefaults() PoolOptions {
	if o.DiscoverInterval == 0 {
		o.DiscoverInterval = DefaultDiscoverInterval
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.FailThreshold == 0 {
		o.FailThreshold = DefaultFailThreshold
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Client.Logger == nil {
		o.Client.Logger = o.Logger
	}
	if o.Addrs != nil {
		addrs := slices.Clone(o.Addrs)
		o.Discover = func(context.Context) ([]string, error) { return addrs, nil }
		o.Addrs = nil
	}
	return o
}

// CallOption modifies one Pool call.
type CallOption func(*callOptions)

type callOptions struct{ idempotent bool }

// Idempotent marks a call as safe to run more than once: when the enclave
// it went to fails without a usable answer (the connection broke, the
// enclave could not be reached, or it answered "unavailable"), the call is
// retried on another enclave of the pool. Without it a call is never
// retried on another enclave, because the first may have acted on it.
func Idempotent() CallOption { return func(o *callOptions) { o.idempotent = true } }

// MemberStatus describes one enclave of a Pool.
type MemberStatus struct {
	Addr string
	// Healthy is true while the enclave is in service.
	Healthy bool
	// Failures is the number of consecutive failed probes.
	Failures int
	// LastErr is the last probe error; nil after a successful probe.
	LastErr error
}

// Pool calls a set of enclave servers, spreading calls round-robin over
// those in service. A background prober sends enclavekit.health to every
// enclave each ProbeInterval: FailThreshold consecutive failures take an
// enclave out of service, one success puts it back. It is safe for
// concurrent use; Close releases everything.
type Pool struct {
	opts PoolOptions
	next atomic.Uint64

	// probe checks one member; tests replace it.
	probe func(ctx context.Context, m *member) error

	mu      sync.Mutex
	members []*member // in Discover order
	closed  bool

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type member struct {
	addr string

	mu       sync.Mutex
	client   *Client // nil until a dial succeeded
	healthy  bool
	failures int
	lastErr  error
	closed   bool // removed from the pool: no new client
}

// NewPool returns a Pool after one round of discovery and probes, so that
// enclaves reachable now serve the first call. ctx bounds only that first
// round. The pool is usable even if no enclave answered yet.
func NewPool(ctx context.Context, opts PoolOptions) (*Pool, error) {
	return newPool(ctx, opts, nil)
}

// newPool is NewPool with the probe replaceable (nil: healthProbe).
func newPool(ctx context.Context, opts PoolOptions, probe func(context.Context, *member) error) (*Pool, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{opts: opts.withDefaults(), kick: make(chan struct{}, 1), probe: probe}
	if p.probe == nil {
		p.probe = p.healthProbe
	}
	if err := p.refresh(ctx); err != nil && len(p.snapshot()) == 0 {
		return nil, fmt.Errorf("parent: pool discovery: %w", err)
	}
	p.probeAll(ctx)
	life, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go p.loop(life)
	return p, nil
}

// Close stops probing and closes every enclave's Client; calls in flight
// fail. It is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ms := p.members
	p.members = nil
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	for _, m := range ms {
		m.close()
	}
	return nil
}

// Members reports the state of every enclave of the pool.
func (p *Pool) Members() []MemberStatus {
	var out []MemberStatus
	for _, m := range p.snapshot() {
		m.mu.Lock()
		out = append(out, MemberStatus{Addr: m.addr, Healthy: m.healthy, Failures: m.failures, LastErr: m.lastErr})
		m.mu.Unlock()
	}
	return out
}

// Call is Client.Call on one enclave of the pool (see CallRaw).
func (p *Pool) Call(ctx context.Context, method string, req, resp any, opts ...CallOption) error {
	var body []byte
	if req != nil {
		b, err := protocol.Marshal(req)
		if err != nil {
			return fmt.Errorf("parent: encoding %s request: %w", method, err)
		}
		body = b
	}
	out, err := p.CallRaw(ctx, method, body, opts...)
	if err != nil || resp == nil {
		return err
	}
	if err := protocol.Unmarshal(out, resp); err != nil {
		return fmt.Errorf("parent: decoding %s response: %w", method, err)
	}
	return nil
}

// CallRaw sends the call to the next enclave in service. With Idempotent,
// a call that failed for a reason another enclave might not have (see
// Idempotent) is retried on each other enclave in service, once each,
// within ctx. The error is that of the last attempt.
func (p *Pool) CallRaw(ctx context.Context, method string, body []byte, opts ...CallOption) ([]byte, error) {
	var co callOptions
	for _, o := range opts {
		o(&co)
	}
	tried := map[*member]bool{}
	var lastErr error
	for {
		m, err := p.pick(tried)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, err
		}
		tried[m] = true
		out, err := p.callMember(ctx, m, method, body)
		if err == nil {
			return out, nil
		}
		var re *protocol.RemoteError
		if retryable(err) && !errors.As(err, &re) {
			p.suspect() // the enclave may be gone: probe now
		}
		if !co.idempotent || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
	}
}

// retryable reports errors after which another enclave may succeed: the
// connection broke, the enclave could not be reached, the member was
// removed while the call waited, or the enclave answered unavailable. The
// caller's own errors (bad method name, a request too large) and its
// context's end are not.
func retryable(err error) bool {
	var re *protocol.RemoteError
	if errors.As(err, &re) {
		return errors.Is(err, protocol.ErrUnavailable)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var oe *net.OpError
	return errors.Is(err, ErrConnLost) || errors.Is(err, ErrClientClosed) || errors.As(err, &oe)
}

// pick returns the next enclave in service not in skip.
func (p *Pool) pick(skip map[*member]bool) (*member, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClientClosed
	}
	n := len(p.members)
	start := int(p.next.Add(1) % uint64(max(n, 1)))
	for i := range n {
		m := p.members[(start+i)%n]
		if skip[m] {
			continue
		}
		m.mu.Lock()
		ok := m.healthy && m.client != nil
		m.mu.Unlock()
		if ok {
			return m, nil
		}
	}
	return nil, ErrNoHealthyEnclave
}

func (p *Pool) callMember(ctx context.Context, m *member, method string, body []byte) ([]byte, error) {
	m.mu.Lock()
	c := m.client
	m.mu.Unlock()
	if c == nil {
		return nil, ErrClientClosed
	}
	return c.CallRaw(ctx, method, body)
}

// suspect asks the prober to probe every enclave now rather than at the
// next interval.
func (p *Pool) suspect() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) snapshot() []*member {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.members)
}

func (p *Pool) loop(ctx context.Context) {
	defer p.wg.Done()
	probeT := time.NewTicker(p.opts.ProbeInterval)
	defer probeT.Stop()
	discT := time.NewTicker(p.opts.DiscoverInterval)
	defer discT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-discT.C:
			if err := p.refresh(ctx); err != nil && ctx.Err() == nil {
				p.opts.Logger.Warn("enclavekit pool: discovery failed; keeping the current enclaves", "err", err)
			}
		case <-probeT.C:
			p.probeAll(ctx)
		case <-p.kick:
			p.probeAll(ctx)
		}
	}
}

// refresh calls Discover and updates the member list.
func (p *Pool) refresh(ctx context.Context) error {
	addrs, err := p.opts.Discover(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var want []string
	for _, a := range addrs {
		if _, err := transport.ParseAddr(a); err != nil {
			p.opts.Logger.Warn("enclavekit pool: discovery returned a bad address; ignored", "addr", a, "err", err)
			continue
		}
		if !seen[a] && len(want) < MaxAddrs {
			seen[a] = true
			want = append(want, a)
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	old := map[string]*member{}
	for _, m := range p.members {
		old[m.addr] = m
	}
	next := make([]*member, 0, len(want))
	for _, a := range want {
		if m, ok := old[a]; ok {
			next = append(next, m)
			delete(old, a)
			continue
		}
		next = append(next, &member{addr: a})
	}
	p.members = next
	p.mu.Unlock()
	for _, m := range old {
		p.opts.Logger.Info("enclavekit pool: enclave removed by discovery", "addr", m.addr)
		m.close()
	}
	return nil
}

// probeAll probes every member at once and waits for all.
func (p *Pool) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, m := range p.snapshot() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.record(m, p.probe(ctx, m))
		}()
	}
	wg.Wait()
}

// record applies a probe result to m's state.
func (p *Pool) record(m *member, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		if !m.healthy {
			p.opts.Logger.Info("enclavekit pool: enclave in service", "addr", m.addr)
		}
		m.healthy, m.failures, m.lastErr = true, 0, nil
		return
	}
	m.failures++
	m.lastErr = err
	if m.healthy && m.failures >= p.opts.FailThreshold {
		m.healthy = false
		p.opts.Logger.Warn("enclavekit pool: enclave taken out of service", "addr", m.addr, "failed_probes", m.failures, "err", err)
	}
}

// healthProbe dials m if needed and calls enclavekit.health.
func (p *Pool) healthProbe(ctx context.Context, m *member) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.ProbeTimeout)
	defer cancel()
	m.mu.Lock()
	c := m.client
	m.mu.Unlock()
	if c == nil {
		nc, err := Dial(ctx, m.addr, p.opts.Client)
		if err != nil {
			return err
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			nc.Close()
			return ErrClientClosed
		}
		if m.client == nil {
			m.client = nc
			nc = nil
		}
		c = m.client
		m.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
	}
	var h protocol.HealthResponse
	return c.Call(ctx, protocol.MethodHealth, nil, &h)
}

func (m *member) close() {
	m.mu.Lock()
	c := m.client
	m.client = nil
	m.healthy = false
	m.closed = true
	m.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
