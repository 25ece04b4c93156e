package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Phase names, in the order they run after the bulk load.
const (
	PhaseSlowloris  = "slowloris"
	PhaseIngress    = "ingress"
	PhasePipeliners = "pipeliners"
)

const (
	// goodBody is the size of the good client's echo calls.
	goodBody = 64
	// goodPause is the good client's pause between calls.
	goodPause = 5 * time.Millisecond
	// goodTimeout bounds one good call; a slower call is an error.
	goodTimeout = 5 * time.Second
	// redialPause is how long an attacker waits after the server cut its
	// connection before it connects again: it keeps the pressure on
	// without spinning the CPUs on reconnects.
	redialPause = time.Second
	// trickleEvery is the pace of the trickling connections: one byte per
	// interval, far below the ingress's MinRate.
	trickleEvery = time.Second
	// pipelineBody is the body of the pipeliners' requests: a 1 MiB frame.
	pipelineBody = protocol.DefaultMaxFrameSize - 64
)

// PhaseReport is one attack phase: an attack held for the phase's
// duration while a good client makes small echo calls, with every limit
// at its default.
type PhaseReport struct {
	// Name is PhaseSlowloris, PhaseIngress or PhasePipeliners.
	Name string
	// Attack describes what was held against the system.
	Attack string
	// Elapsed is how long the phase ran.
	Elapsed time.Duration
	// GoodOK and GoodFailed count the good client's calls; GoodErrors
	// holds the first few errors.
	GoodOK, GoodFailed uint64
	GoodErrors         []string
	// GoodP50, GoodP99 and GoodMax are the good client's latencies.
	GoodP50, GoodP99, GoodMax time.Duration
	// AttackConns counts the attackers' connections made, AttackCut those
	// the system closed (evicted, timed out or too slow) during the phase.
	AttackConns, AttackCut uint64
	// Limits says what the limits did, from the components' counters.
	Limits string
	// GoroutinesBefore and GoroutinesAfter are runtime.NumGoroutine at the
	// start of the phase and after it stopped (and settled).
	GoroutinesBefore, GoroutinesAfter int
}

// phaseRun is the state of one running phase.
type phaseRun struct {
	r      *runner
	rep    *PhaseReport
	stop   chan struct{}
	ctx    context.Context // done when stop is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hist       histogram
	ok, failed atomic.Uint64
	conns, cut atomic.Uint64
	errMu      sync.Mutex
}

func (p *phaseRun) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// pause waits d, or less if the phase stops; it reports whether to go on.
func (p *phaseRun) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stop:
		return false
	case <-t.C:
		return true
	}
}

// phaseDuration is how long each attack phase runs.
func (r *runner) phaseDuration() time.Duration {
	return max(r.o.Duration/2, time.Second)
}

// phases runs the attack phases one after the other, each with the good
// client measured, unless ctx ended.
func (r *runner) phases(ctx context.Context, before int) {
	r.settleTo(before)
	for _, ph := range []struct {
		name string
		run  func(context.Context, *phaseRun) (cleanup func(), err error)
	}{
		{PhaseSlowloris, r.phaseSlowloris},
		{PhaseIngress, r.phaseIngress},
		{PhasePipeliners, r.phasePipeliners},
	} {
		if ctx.Err() != nil {
			return
		}
		rep := PhaseReport{Name: ph.name, GoroutinesBefore: runtime.NumGoroutine()}
		p := &phaseRun{r: r, rep: &rep, stop: make(chan struct{})}
		p.ctx, p.cancel = context.WithCancel(context.Background())
		start := time.Now()
		cleanup, err := ph.run(ctx, p)
		if err != nil {
			rep.GoodErrors = append(rep.GoodErrors, "set-up: "+err.Error())
			rep.GoodFailed++
		} else {
			t := time.NewTimer(r.phaseDuration())
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				r.rep.Interrupted = true
			}
		}
		close(p.stop)
		p.cancel()
		p.wg.Wait()
		if cleanup != nil {
			cleanup()
		}
		rep.Elapsed = time.Since(start)
		s := p.hist.snap()
		rep.GoodOK, rep.GoodFailed = p.ok.Load(), rep.GoodFailed+p.failed.Load()
		rep.GoodP50, rep.GoodP99, rep.GoodMax = s.quantile(0.50), s.quantile(0.99), time.Duration(p.hist.max.Load())
		rep.AttackConns, rep.AttackCut = p.conns.Load(), p.cut.Load()
		rep.GoroutinesAfter = r.settleTo(rep.GoroutinesBefore)
		r.rep.Phases = append(r.rep.Phases, rep)
		fmt.Fprintf(r.o.Out, "soak: phase %s: good client %d ok, %d failed, p99 %s; attack %d connections, %d cut; goroutines %d -> %d\n",
			rep.Name, rep.GoodOK, rep.GoodFailed, dur(rep.GoodP99), rep.AttackConns, rep.AttackCut, rep.GoroutinesBefore, rep.GoroutinesAfter)
	}
}

// settleTo waits, up to SettleTimeout, for the goroutine count to fall to
// n, and returns the count.
func (r *runner) settleTo(n int) int {
	deadline := time.Now().Add(r.o.SettleTimeout)
	got := runtime.NumGoroutine()
	for got > n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		got = runtime.NumGoroutine()
	}
	return got
}

// good starts the good client: a parent.Client of one connection to addr,
// from the loopback address from (another host, as far as per-source
// limits go; "" for the default), making goodBody-byte echo calls, each
// checked, until the phase stops. It returns after the first call
// succeeded: the good client is connected before the attack starts.
func (p *phaseRun) good(ctx context.Context, addr, from string) error {
	opts := parent.Options{PoolSize: 1, Logger: p.r.o.Logger}
	if from != "" {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		opts.Dial = func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", hostPort(a)) }
	}
	c, err := parent.Dial(ctx, addr, opts)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, goodTimeout)
	_, err = c.CallRaw(wctx, MethodEcho, []byte("warm-up"))
	cancel()
	if err != nil {
		c.Close()
		return fmt.Errorf("the good client's first call: %w", err)
	}
	p.wg.Go(func() {
		defer c.Close()
		body := bytes.Repeat([]byte{'g'}, goodBody)
		for !p.stopped() {
			cctx, cancel := context.WithTimeout(ctx, goodTimeout)
			t0 := time.Now()
			out, err := c.CallRaw(cctx, MethodEcho, body)
			d := time.Since(t0)
			cancel()
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				p.fail(err)
			case !bytes.Equal(out, body):
				p.fail(fmt.Errorf("echo of %d bytes returned %d different bytes", len(body), len(out)))
			default:
				p.ok.Add(1)
				p.hist.record(d)
			}
			if !p.pause(goodPause) {
				return
			}
		}
	})
	return nil
}

func (p *phaseRun) fail(err error) {
	p.failed.Add(1)
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if len(p.rep.GoodErrors) < maxKeptErrors {
		p.rep.GoodErrors = append(p.rep.GoodErrors, err.Error())
	}
}

// attackers runs n attackers: each connects to addr, runs hold on the
// connection until the system cuts it (counted) or the phase stops, then
// connects again after redialPause.
func (p *phaseRun) attackers(n int, addr string, hold func(i int, c net.Conn) (cut bool)) {
	for i := range n {
		p.wg.Go(func() {
			var d net.Dialer
			for !p.stopped() {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					if !p.pause(redialPause) {
						return
					}
					continue
				}
				p.conns.Add(1)
				stop := context.AfterFunc(p.ctx, func() { c.Close() })
				cut := hold(i, c)
				stop()
				c.Close()
				if cut && !p.stopped() {
					p.cut.Add(1)
				}
				// Jittered, so that attackers cut together do not come
				// back as one burst.
				if !p.pause(redialPause/2 + rand.N(redialPause)) {
					return
				}
			}
		})
	}
}

// waitCut blocks until the peer closes c (true) or c is closed by us
// (false).
func waitCut(c net.Conn) bool {
	var b [512]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return !errors.Is(err, net.ErrClosed)
		}
	}
}

// phaseSlowloris: Slowloris attackers against the enclave server, half
// silent, half sending two bytes of a frame header, each reconnecting
// when cut; the good client calls the server directly.
func (r *runner) phaseSlowloris(ctx context.Context, p *phaseRun) (func(), error) {
	n := r.o.Slowloris
	p.rep.Attack = fmt.Sprintf("%d connections held against the enclave server (half silent, half 2 of 4 frame-header bytes), reconnecting %s after each cut", n, redialPause)
	ev0, dr0 := r.srv.Stats().EvictedConns, r.srv.Stats().DroppedConns
	if err := p.good(ctx, r.srvAddr, ""); err != nil {
		return nil, err
	}
	p.attackers(n, hostPort(r.srvAddr), func(i int, c net.Conn) bool {
		if i%2 == 1 {
			if _, err := c.Write([]byte{0, 0}); err != nil {
				return true
			}
		}
		return waitCut(c)
	})
	return func() {
		st := r.srv.Stats()
		p.rep.Limits = fmt.Sprintf("server evicted %d, dropped %d (timeouts, and attackers closed mid-frame at the end) (MaxConns %d, ReadFrameTimeout %s)",
			st.EvictedConns-ev0, st.DroppedConns-dr0, enclave.DefaultMaxConns, r.rep.ReadFrameTimeout)
	}, nil
}

// phaseIngress: Tricklers connections through a ingress.Server (default
// limits) to the enclave server, each sending a frame header announcing
// 256 bytes and then one byte per trickleEvery; the good client calls
// through the same ingress.
func (r *runner) phaseIngress(ctx context.Context, p *phaseRun) (func(), error) {
	in, err := ingress.New(ingress.Config{Target: r.srvAddr, Logger: r.o.Logger})
	if err != nil {
		return nil, err
	}
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := transport.AddrOf(ln.Addr())
	ictx, icancel := context.WithCancel(context.Background())
	idone := make(chan error, 1)
	go func() { idone <- in.Serve(ictx, ln) }()
	cleanup := func() {
		icancel()
		<-idone
		ls := in.LimitStats()
		p.rep.Limits = fmt.Sprintf("ingress refused %d at the per-source cap, evicted %d, cut %d below MinRate (MaxConnsPerSource %d, MinRate %d B/s after %s)",
			ls.SourceRejectedConns, ls.EvictedConns, ls.SlowConns, ingress.DefaultMaxConnsPerSource, ingress.DefaultMinRate, ingress.DefaultMinRateGrace)
	}
	n := r.o.Tricklers
	// The good client is another host: 127.0.0.2 where it can be bound
	// (Linux), else it shares the attackers' address and its per-source cap.
	from, fromNote := "127.0.0.2", "the good client calls from 127.0.0.2"
	if l, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		from, fromNote = "", "the good client shares 127.0.0.1 (127.0.0.2 cannot be bound here)"
	} else {
		l.Close()
	}
	p.rep.Attack = fmt.Sprintf("%d connections from 127.0.0.1 held against the ingress, trickling a 256-byte frame one byte per %s, reconnecting %s after each cut; %s", n, trickleEvery, redialPause, fromNote)
	if err := p.good(ctx, addr, from); err != nil {
		return cleanup, err
	}
	p.attackers(n, hostPort(addr), func(_ int, c net.Conn) bool {
		if _, err := c.Write([]byte{0, 0, 1, 0}); err != nil {
			return true
		}
		for {
			_ = c.SetReadDeadline(time.Now().Add(trickleEvery))
			var b [64]byte
			_, err := c.Read(b[:])
			var ne net.Error
			switch {
			case err == nil:
				continue
			case errors.As(err, &ne) && ne.Timeout():
				if _, err := c.Write([]byte{'t'}); err != nil {
					return !errors.Is(err, net.ErrClosed)
				}
			default:
				return !errors.Is(err, net.ErrClosed)
			}
		}
	})
	return cleanup, nil
}

// phasePipeliners: Pipeliners connections to the enclave server, each
// sending 1 MiB echo requests back to back and never reading a response
// (reconnecting when the server cuts them at WriteTimeout); the good
// client calls the server on its own connection.
func (r *runner) phasePipeliners(ctx context.Context, p *phaseRun) (func(), error) {
	n := r.o.Pipeliners
	p.rep.Attack = fmt.Sprintf("%d connections pipelining %s echo requests without reading the responses", n, mib(pipelineBody))
	b, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: MethodEcho, Body: make([]byte, pipelineBody)})
	if err != nil {
		return nil, err
	}
	waits0, dr0 := r.srv.Stats().BudgetWaits, r.srv.Stats().DroppedConns
	if err := p.good(ctx, r.srvAddr, ""); err != nil {
		return nil, err
	}
	p.attackers(n, hostPort(r.srvAddr), func(_ int, c net.Conn) bool {
		for {
			if err := protocol.WriteFrame(c, b, protocol.DefaultMaxFrameSize); err != nil {
				return !errors.Is(err, net.ErrClosed)
			}
		}
	})
	return func() {
		st := r.srv.Stats()
		p.rep.Limits = fmt.Sprintf("server budget waits %d, dropped %d (WriteTimeout %s, and pipeliners closed mid-frame at the end)",
			st.BudgetWaits-waits0, st.DroppedConns-dr0, enclave.DefaultWriteTimeout)
	}, nil
}

// hostPort strips the tcp:// of a transport address.
func hostPort(addr string) string {
	a, err := transport.ParseAddr(addr)
	if err != nil {
		return addr
	}
	return a.HostPort
}
