package soak

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/proxy"
	"github.com/enclavekit/enclavekit/transport"
)

// MethodEcho is the method the soak's enclave server registers: it returns
// its request body.
const MethodEcho = "soak.echo"

const (
	// maxKeptErrors bounds the error texts a Report keeps per load.
	maxKeptErrors = 5
	// fdMargin is the descriptors left for everything but the loads'
	// sockets (standard streams, listeners, epoll, files read).
	fdMargin = 256
	// fdPerStream is the descriptors one proxied stream may hold: its
	// four sockets (client, the proxy's two sides, sink) and room for the
	// next stream's sockets while the previous ones are being closed.
	fdPerStream = 6
	// acceptWait bounds the wait for the server to accept every slowloris
	// connection before the loads start.
	acceptWait = 30 * time.Second
	// slowlorisProbe is how long each slowloris connection is watched at
	// the end for a close by the server.
	slowlorisProbe = 200 * time.Millisecond
	// streamChunk is the write size of the proxied streams.
	streamChunk = 64 << 10
)

// sysFS makes the enclave server's startup checks pass: the NSM hardware
// RNG and kvm-clock, as inside a Nitro Enclave.
func sysFS() fstest.MapFS {
	return fstest.MapFS{
		"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
		"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
	}
}

// emulatedNSM is an NSM emulator session that passes the server's NSM
// checks: non-zero PCRs (not a debug-mode enclave) and the system's time.
func emulatedNSM() (*attest.NSM, error) {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		return nil, err
	}
	return attest.OpenNSM(emu.Options())
}

// runner is one soak run.
type runner struct {
	o   Options
	rep Report

	closers []func() // run in reverse order by teardown

	srv       *enclave.Server
	srvAddr   string
	client    *parent.Client
	routeAddr string
	slow      []net.Conn

	sinkMu    sync.Mutex
	sinkConns map[net.Conn]struct{}
	sinkWG    sync.WaitGroup

	stop chan struct{} // closed when the loads must stop starting work

	hist        histogram
	callsOK     atomic.Uint64
	callsFailed atomic.Uint64
	mismatched  atomic.Uint64

	streamsOK     atomic.Uint64
	streamsFailed atomic.Uint64
	proxySent     atomic.Uint64
	proxyOK       atomic.Uint64
	lost          atomic.Uint64
	corrupted     atomic.Uint64
	written       atomic.Uint64 // bytes written into the proxy, for the per-second rate

	errMu        sync.Mutex
	callErrors   []string
	streamErrors []string
}

// Run starts the components on loopback, runs the loads for
// Options.Duration (or until ctx ends, which marks the report Interrupted),
// stops everything and returns the report. An error means the run could
// not be set up (bad options, a component that failed to start); a run
// that violated an invariant returns a Report whose Problems say which.
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.Validate(); err != nil {
		return Report{}, err
	}
	o := opts.withDefaults()
	if o.Seed == 0 {
		o.Seed = rand.Uint64() | 1
	}
	r := &runner{o: o, sinkConns: map[net.Conn]struct{}{}, stop: make(chan struct{})}
	r.rep.GoroutinesBefore = runtime.NumGoroutine()
	r.rep.RSSSource = rssSource
	r.fitSlowloris(fdLimit())
	r.rep.Options = r.o

	if err := r.setup(ctx); err != nil {
		r.teardown()
		return Report{}, err
	}
	before := runtime.NumGoroutine()
	r.load(ctx)
	r.finish()
	r.phases(ctx, before)
	r.teardown()
	r.settle()
	return r.rep, nil
}

// fitSlowloris lowers o.Slowloris, with a note, when the descriptor limit
// cannot hold it beside the other loads. Each slowloris connection and each
// pooled client connection costs two descriptors (both ends are in this
// process); each stream fdPerStream.
func (r *runner) fitSlowloris(limit uint64) {
	others := uint64(fdPerStream*r.o.Streams + 2*r.o.PoolSize + fdMargin)
	need := others + 2*uint64(r.o.Slowloris)
	if limit == 0 || need <= limit {
		return
	}
	fit := 0
	if limit > others {
		fit = int((limit - others) / 2)
	}
	note := fmt.Sprintf("slowloris lowered from %d to %d connections: the open-file limit (RLIMIT_NOFILE) is %d and the run needs %d descriptors for %d; raise it with ulimit -n",
		r.o.Slowloris, fit, limit, need, r.o.Slowloris)
	r.rep.Notes = append(r.rep.Notes, note)
	fmt.Fprintf(r.o.Out, "soak: note: %s\n", note)
	r.o.Slowloris = fit
	// The ingress phase runs alone: four descriptors per trickler.
	if need := 4*uint64(r.o.Tricklers) + fdMargin; limit != 0 && need > limit {
		fit := 0
		if limit > fdMargin {
			fit = int((limit - fdMargin) / 4)
		}
		note := fmt.Sprintf("tricklers lowered from %d to %d connections: the open-file limit (RLIMIT_NOFILE) is %d; raise it with ulimit -n", r.o.Tricklers, fit, limit)
		r.rep.Notes = append(r.rep.Notes, note)
		fmt.Fprintf(r.o.Out, "soak: note: %s\n", note)
		r.o.Tricklers = max(fit, 1)
	}
}

func (r *runner) setup(ctx context.Context) error {
	o := r.o
	fmt.Fprintf(r.o.Out, "soak: %s of load on loopback: %d RPC goroutines, %d proxied streams, %d slowloris connections (seed %d)\n",
		o.Duration, o.Concurrency, o.Streams, o.Slowloris, o.Seed)

	// The sink: hashes each connection's bytes and answers with their
	// count and SHA-256 once the sender half-closes.
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("soak: sink: %w", err)
	}
	r.sinkWG.Add(1)
	go r.sinkAccept(sinkLn)
	r.closers = append(r.closers, func() {
		sinkLn.Close()
		r.sinkMu.Lock()
		for c := range r.sinkConns {
			c.Close()
		}
		r.sinkMu.Unlock()
		r.sinkWG.Wait()
	})
	sinkAddr := sinkLn.Addr().(*net.TCPAddr)

	// The egress proxy: one fixed route to the sink, whose exact loopback
	// IP and port are allowlisted.
	px, err := proxy.New(proxy.Config{
		Routes:    []proxy.Route{{Name: "soak-sink", Listen: "tcp://127.0.0.1:0", To: sinkAddr.String()}},
		Allowlist: []proxy.AllowEntry{{Address: sinkAddr.IP.String(), Port: sinkAddr.Port}},
		Limits:    proxy.Limits{MaxConns: max(proxy.DefaultMaxConns, 2*o.Streams+16), DrainTimeout: 5 * time.Second},
	}, proxy.Options{Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("soak: proxy: %w", err)
	}
	if err := px.Listen(ctx); err != nil {
		return fmt.Errorf("soak: proxy: %w", err)
	}
	r.routeAddr = px.Addr(0)
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan error, 1)
	go func() { pdone <- px.Serve(pctx) }()
	r.closers = append(r.closers, func() {
		pcancel()
		<-pdone
	})

	// Registered before the server's closer so that it runs after it: the
	// server drains the stalled connections itself, then ours are closed.
	r.closers = append(r.closers, func() {
		for _, c := range r.slow {
			c.Close()
		}
	})

	// The enclave server: startup checks pass (MapFS); every limit at its
	// default (MaxConns 256, ReadFrameTimeout 10s, IdleTimeout 2m): the
	// stalled connections beyond the cap are evicted, and those left are
	// cut at ReadFrameTimeout, as in production.
	r.rep.ReadFrameTimeout = enclave.DefaultReadFrameTimeout
	nsm, err := emulatedNSM()
	if err != nil {
		return fmt.Errorf("soak: enclave server: %w", err)
	}
	r.closers = append(r.closers, func() { nsm.Close() })
	srv, err := enclave.New(enclave.Config{
		Attester:     nsm,
		Addr:         "tcp://127.0.0.1:0",
		DrainTimeout: 5 * time.Second,
		Logger:       o.Logger,
		SysFS:        sysFS(),
	})
	if err != nil {
		return fmt.Errorf("soak: enclave server: %w", err)
	}
	srv.Handle(MethodEcho, func(_ context.Context, body []byte) ([]byte, error) { return body, nil })
	if err := srv.Listen(ctx); err != nil {
		return fmt.Errorf("soak: enclave server: %w", err)
	}
	r.srv = srv
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- srv.Serve(sctx) }()
	r.closers = append(r.closers, func() {
		scancel()
		<-sdone
	})
	srvAddr := transport.AddrOf(srv.Addr())

	// Slowloris: 2 bytes of a 4-byte frame header, then nothing.
	var d net.Dialer
	for range o.Slowloris {
		c, err := d.DialContext(ctx, "tcp", srv.Addr().String())
		if err != nil {
			return fmt.Errorf("soak: slowloris connection %d of %d: %w", len(r.slow)+1, o.Slowloris, err)
		}
		r.slow = append(r.slow, c)
		if _, err := c.Write([]byte{0, 0}); err != nil {
			return fmt.Errorf("soak: slowloris connection %d of %d: %w", len(r.slow), o.Slowloris, err)
		}
	}
	deadline := time.Now().Add(acceptWait)
	for st := r.srv.Stats(); st.TotalConns+st.RejectedConns < uint64(len(r.slow)); st = r.srv.Stats() {
		if time.Now().After(deadline) {
			return fmt.Errorf("soak: the enclave server accepted only %d of %d slowloris connections within %s",
				r.srv.Stats().TotalConns, len(r.slow), acceptWait)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	r.rep.SlowlorisHeld = len(r.slow)
	r.srvAddr = srvAddr

	// The shared client.
	client, err := parent.Dial(ctx, srvAddr, parent.Options{PoolSize: o.PoolSize, Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("soak: dialing the enclave server: %w", err)
	}
	r.client = client
	r.closers = append(r.closers, func() { client.Close() })

	fmt.Fprintf(r.o.Out, "soak: enclave server %s (%d slowloris connections held), proxy %s -> sink %s\n",
		srvAddr, len(r.slow), r.routeAddr, sinkAddr)
	return nil
}

// load runs the loads and the sampler until Duration has passed or ctx
// ends, then waits for the work in progress to finish.
func (r *runner) load(ctx context.Context) {
	start := time.Now()
	var workers sync.WaitGroup
	for i := range r.o.Concurrency {
		workers.Go(func() { r.callLoop(ctx, r.rng(1, i)) })
	}
	for i := range r.o.Streams {
		workers.Go(func() { r.streamLoop(ctx, r.rng(2, i)) })
	}
	var sampler sync.WaitGroup
	sampler.Go(func() { r.sample(start) })

	t := time.NewTimer(r.o.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		r.rep.Interrupted = true
	}
	close(r.stop)
	workers.Wait()
	sampler.Wait()
	r.rep.Elapsed = time.Since(start)
}

// rng returns a deterministic generator for worker i of kind k.
func (r *runner) rng(k, i int) *rand.ChaCha8 {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], r.o.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(k))
	binary.LittleEndian.PutUint64(seed[16:], uint64(i))
	return rand.NewChaCha8(seed)
}

func (r *runner) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

func (r *runner) keepErr(list *[]string, err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(*list) < maxKeptErrors {
		*list = append(*list, err.Error())
	}
}

// callLoop makes echo calls with random bodies and checks every byte.
func (r *runner) callLoop(ctx context.Context, src *rand.ChaCha8) {
	rng := rand.New(src)
	buf := make([]byte, r.o.MaxBody)
	for !r.stopped() {
		body := buf[:rng.IntN(r.o.MaxBody+1)]
		_, _ = src.Read(body)
		t0 := time.Now()
		out, err := r.client.CallRaw(ctx, MethodEcho, body)
		d := time.Since(t0)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return // interrupted: not the server's failure
			}
			r.callsFailed.Add(1)
			r.keepErr(&r.callErrors, err)
		case !bytes.Equal(out, body):
			r.callsFailed.Add(1)
			r.mismatched.Add(1)
			r.keepErr(&r.callErrors, fmt.Errorf("echo of %d bytes returned %d different bytes", len(body), len(out)))
		default:
			r.callsOK.Add(1)
			r.hist.record(d)
		}
	}
}

// streamLoop sends random payloads through the proxy, one stream at a time.
func (r *runner) streamLoop(ctx context.Context, src *rand.ChaCha8) {
	rng := rand.New(src)
	buf := make([]byte, streamChunk)
	for !r.stopped() {
		r.stream(ctx, src, buf, rng.Int64N(r.o.MaxStreamBytes+1))
		if ctx.Err() != nil {
			return
		}
	}
}

// stream sends size random bytes through the proxy route, half-closes, and
// compares the sink's count and SHA-256 with its own.
func (r *runner) stream(ctx context.Context, src *rand.ChaCha8, buf []byte, size int64) {
	var sent int64
	fail := func(err error) {
		if ctx.Err() != nil {
			return // interrupted
		}
		r.streamsFailed.Add(1)
		r.lost.Add(uint64(sent))
		r.keepErr(&r.streamErrors, fmt.Errorf("stream of %d bytes, %d sent: %w", size, sent, err))
	}
	sctx, cancel := context.WithTimeout(ctx, r.o.StreamTimeout)
	defer cancel()
	c, err := transport.Dial(sctx, r.routeAddr)
	if err != nil {
		fail(err)
		return
	}
	defer c.Close()
	defer context.AfterFunc(sctx, func() { c.Close() })()
	defer func() { r.proxySent.Add(uint64(sent)) }()

	h := sha256.New()
	for sent < size {
		p := buf[:min(int64(len(buf)), size-sent)]
		_, _ = src.Read(p)
		h.Write(p)
		n, err := c.Write(p)
		sent += int64(n)
		r.written.Add(uint64(n))
		if err != nil {
			fail(err)
			return
		}
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		fail(fmt.Errorf("%T cannot half-close", c))
		return
	}
	if err := cw.CloseWrite(); err != nil {
		fail(err)
		return
	}
	var reply [8 + sha256.Size]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		fail(fmt.Errorf("reading the sink's answer: %w", err))
		return
	}
	got := binary.BigEndian.Uint64(reply[:8])
	switch {
	case got < uint64(sent):
		r.streamsFailed.Add(1)
		r.lost.Add(uint64(sent) - got)
		r.keepErr(&r.streamErrors, fmt.Errorf("sent %d bytes, the sink received %d", sent, got))
	case got > uint64(sent):
		r.streamsFailed.Add(1)
		r.corrupted.Add(got - uint64(sent))
		r.keepErr(&r.streamErrors, fmt.Errorf("sent %d bytes, the sink received %d", sent, got))
	case !bytes.Equal(reply[8:], h.Sum(nil)):
		r.streamsFailed.Add(1)
		r.corrupted.Add(uint64(sent))
		r.keepErr(&r.streamErrors, fmt.Errorf("stream of %d bytes: SHA-256 differs at the sink", sent))
	default:
		r.streamsOK.Add(1)
		r.proxyOK.Add(uint64(sent))
	}
}

func (r *runner) sinkAccept(ln net.Listener) {
	defer r.sinkWG.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or a similar transient failure: keep
			// accepting after a pause, as net/http does. Giving up would
			// leave the streams queued in the backlog hanging.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		r.sinkMu.Lock()
		r.sinkConns[c] = struct{}{}
		r.sinkWG.Add(1)
		r.sinkMu.Unlock()
		go r.sinkServe(c)
	}
}

// sinkServe reads a connection to EOF, then answers with the byte count
// (8 bytes, big-endian) and the SHA-256 of what it read.
func (r *runner) sinkServe(c net.Conn) {
	defer r.sinkWG.Done()
	defer func() {
		r.sinkMu.Lock()
		delete(r.sinkConns, c)
		r.sinkMu.Unlock()
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(r.o.StreamTimeout))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return
	}
	var reply [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(reply[:8], uint64(n))
	h.Sum(reply[8:8])
	_, _ = c.Write(reply[:])
}

// sample records one Sample per second and writes a progress line every
// ProgressEvery, until the loads stop.
func (r *runner) sample(start time.Time) {
	every := max(int(r.o.ProgressEvery/time.Second), 1)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prevSec, prevLine *histSnap
	var prevCalls, prevWritten, lineCalls, lineWritten uint64
	lineStart := start
	for n := 1; ; n++ {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		h := r.hist.snap()
		calls := r.callsOK.Load() + r.callsFailed.Load()
		written := r.written.Load()
		sec := h.since(prevSec)
		s := Sample{
			At:         now.Sub(start),
			Goroutines: runtime.NumGoroutine(),
			RSS:        readRSS(),
			Calls:      calls - prevCalls,
			P50:        sec.quantile(0.50),
			P99:        sec.quantile(0.99),
			ProxyBytes: written - prevWritten,
			OpenConns:  r.srv.Stats().OpenConns,
		}
		r.rep.Samples = append(r.rep.Samples, s)
		prevSec, prevCalls, prevWritten = h, calls, written
		if n%every == 0 {
			win := h.since(prevLine)
			secs := now.Sub(lineStart).Seconds()
			fmt.Fprintf(r.o.Out, "  [%4ds] %6.0f calls/s  p50 %-8s p99 %-8s | proxy %8s/s | server conns %d | goroutines %d | rss %s\n",
				int(s.At.Round(time.Second)/time.Second), float64(calls-lineCalls)/secs, dur(win.quantile(0.50)), dur(win.quantile(0.99)),
				mib(uint64(float64(written-lineWritten)/secs)), s.OpenConns, s.Goroutines, mib(s.RSS))
			prevLine, lineCalls, lineWritten, lineStart = h, calls, written, now
		}
	}
}

// finish probes the slowloris connections and fills in the report.
func (r *runner) finish() {
	var cut atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(slowlorisProbe)
	for _, c := range r.slow {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			var b [1]byte
			if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
				cut.Add(1)
			}
		})
	}
	wg.Wait()
	rep := &r.rep
	rep.Server = r.srv.Stats()
	// With the default limits the server evicts stalled connections beyond
	// MaxConns and cuts the rest at ReadFrameTimeout; a cut it did not
	// count so is a failure.
	rep.SlowlorisCut = max(int(cut.Load())-int(rep.Server.EvictedConns)-int(rep.Server.DroppedConns), 0)
	rep.SlowlorisEvictedOrTimedOut = int(cut.Load()) - rep.SlowlorisCut
	// The attack phases start from a server without them.
	for _, c := range r.slow {
		c.Close()
	}

	all := r.hist.snap()
	rep.P50, rep.P99, rep.Max = all.quantile(0.50), all.quantile(0.99), time.Duration(r.hist.max.Load())
	rep.CallsOK, rep.CallsFailed, rep.Mismatched = r.callsOK.Load(), r.callsFailed.Load(), r.mismatched.Load()
	rep.StreamsOK, rep.StreamsFailed = r.streamsOK.Load(), r.streamsFailed.Load()
	rep.ProxyBytesSent, rep.ProxyBytesConfirmed = r.proxySent.Load(), r.proxyOK.Load()
	rep.LostBytes, rep.CorruptedBytes = r.lost.Load(), r.corrupted.Load()
	r.errMu.Lock()
	rep.CallErrors, rep.StreamErrors = r.callErrors, r.streamErrors
	r.errMu.Unlock()

	rss := make([]uint64, 0, len(rep.Samples))
	for _, s := range rep.Samples {
		rss = append(rss, s.RSS)
		rep.RSSMax = max(rep.RSSMax, s.RSS)
		rep.GoroutinesPeak = max(rep.GoroutinesPeak, s.Goroutines)
	}
	if len(rss) > 0 {
		rep.RSSFirst, rep.RSSLast = rss[0], rss[len(rss)-1]
	}
	rep.RSSMiddleMean, rep.RSSLastMean, rep.MemoryVerdict = memoryVerdict(rss)
}

// teardown stops the components in the reverse order of their start.
func (r *runner) teardown() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// settle waits, up to SettleTimeout, for the goroutine count to return to
// where it started.
func (r *runner) settle() {
	deadline := time.Now().Add(r.o.SettleTimeout)
	n := runtime.NumGoroutine()
	for n > r.rep.GoroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	r.rep.GoroutinesAfter = n
	fmt.Fprintf(r.o.Out, "soak: stopped; goroutines %d -> %d\n", r.rep.GoroutinesBefore, n)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
