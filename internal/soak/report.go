package soak

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/enclavekit/enclavekit/enclave"
)

// Memory verdicts of a Report.
const (
	MemoryFlat     = "flat"
	MemoryGrowing  = "growing"
	MemoryTooShort = "too short to judge"
)

// Memory growth thresholds: the mean of the last third of the RSS samples
// is "growing" when it exceeds the mean of the middle third by more than
// both of these.
const (
	growthRatio = 0.20
	growthBytes = 16 << 20
	// minSamplesForVerdict is the fewest samples a verdict is drawn from.
	minSamplesForVerdict = 6
)

// Sample is one per-second measurement.
type Sample struct {
	// At is the time since the loads started.
	At time.Duration
	// Goroutines is runtime.NumGoroutine.
	Goroutines int
	// RSS is the resident set size in bytes (see Report.RSSSource).
	RSS uint64
	// Calls is the number of echo calls that completed in this second
	// (successful or not).
	Calls uint64
	// P50 and P99 are the latency quantiles of this second's successful
	// calls (0 when there were none).
	P50, P99 time.Duration
	// ProxyBytes is the bytes written into the proxy in this second.
	ProxyBytes uint64
	// OpenConns is the enclave server's open connection count.
	OpenConns uint64
}

// Report is the result of a Run.
type Report struct {
	// The effective options (defaults applied, Slowloris possibly lowered).
	Options Options
	// Notes are remarks made while setting up (a lowered slowloris count).
	Notes []string
	// Elapsed is how long the loads ran.
	Elapsed time.Duration
	// Interrupted is set when Run's context ended before Duration.
	Interrupted bool

	// CallsOK counts echo calls answered with the exact bytes sent.
	CallsOK uint64
	// CallsFailed counts calls that returned an error or wrong bytes;
	// Mismatched is the part of them that returned wrong bytes.
	CallsFailed, Mismatched uint64
	// CallErrors holds the first few call errors.
	CallErrors []string
	// P50, P99 and Max are the latencies of all successful calls, every
	// one of them made after the slowloris connections were opened (the
	// server evicts or times them out as its default limits say).
	P50, P99, Max time.Duration

	// StreamsOK and StreamsFailed count proxied streams.
	StreamsOK, StreamsFailed uint64
	// ProxyBytesSent is what the stream clients wrote into the proxy;
	// ProxyBytesConfirmed what the sink confirmed by count and SHA-256.
	ProxyBytesSent, ProxyBytesConfirmed uint64
	// LostBytes are bytes sent that the sink did not receive (including
	// every byte of a stream that failed before the sink answered);
	// CorruptedBytes are bytes of streams whose count matched but whose
	// SHA-256 did not, plus bytes the sink received beyond those sent.
	LostBytes, CorruptedBytes uint64
	// StreamErrors holds the first few stream errors.
	StreamErrors []string

	// SlowlorisHeld is how many stalled connections were opened and
	// accepted; SlowlorisCut how many of them the server had closed by the
	// end of the load without counting them as evicted (at MaxConns) or
	// timed out (ReadFrameTimeout), which it does with the default
	// limits; SlowlorisEvictedOrTimedOut how many it closed so.
	SlowlorisHeld, SlowlorisCut int
	SlowlorisEvictedOrTimedOut  int
	// ReadFrameTimeout is the enclave server's, set beyond the run.
	ReadFrameTimeout time.Duration
	// Server is the enclave server's counters at the end of the loads.
	Server enclave.Stats

	// GoroutinesBefore is runtime.NumGoroutine when Run started,
	// GoroutinesPeak the highest sample, GoroutinesAfter the count after
	// everything stopped (and the bounded wait for it to settle).
	GoroutinesBefore, GoroutinesPeak, GoroutinesAfter int

	// RSSSource says what the RSS figures measure.
	RSSSource string
	// RSSFirst, RSSLast and RSSMax come from the samples.
	RSSFirst, RSSLast, RSSMax uint64
	// RSSMiddleMean and RSSLastMean are the means of the middle and last
	// thirds of the samples, from which MemoryVerdict is drawn.
	RSSMiddleMean, RSSLastMean uint64
	// MemoryVerdict is MemoryFlat, MemoryGrowing or MemoryTooShort.
	MemoryVerdict string

	// Samples are the per-second measurements.
	Samples []Sample

	// Phases are the attack phases run after the load, each with the
	// good client measured.
	Phases []PhaseReport
}

// Leaked is GoroutinesAfter - GoroutinesBefore (≤ 0 when nothing leaked).
func (r *Report) Leaked() int { return r.GoroutinesAfter - r.GoroutinesBefore }

// Problems lists every violated invariant; empty means the run passed.
func (r *Report) Problems() []string {
	var p []string
	if r.Interrupted {
		p = append(p, fmt.Sprintf("interrupted after %s of %s", r.Elapsed.Round(time.Millisecond), r.Options.Duration))
	}
	if r.CallsFailed > 0 {
		p = append(p, fmt.Sprintf("%d echo calls failed (%d returned wrong bytes)", r.CallsFailed, r.Mismatched))
	}
	if r.CallsOK == 0 {
		p = append(p, "no echo call succeeded")
	}
	if r.LostBytes > 0 || r.CorruptedBytes > 0 {
		p = append(p, fmt.Sprintf("proxy lost %d and corrupted %d bytes", r.LostBytes, r.CorruptedBytes))
	}
	if r.StreamsFailed > 0 {
		p = append(p, fmt.Sprintf("%d proxied streams failed", r.StreamsFailed))
	}
	if r.StreamsOK == 0 {
		p = append(p, "no proxied stream completed")
	}
	if r.SlowlorisCut > 0 {
		p = append(p, fmt.Sprintf("%d of %d slowloris connections were cut before the end", r.SlowlorisCut, r.SlowlorisHeld))
	}
	if r.Leaked() > 0 {
		p = append(p, fmt.Sprintf("%d goroutines leaked (%d before, %d after)", r.Leaked(), r.GoroutinesBefore, r.GoroutinesAfter))
	}
	for _, ph := range r.Phases {
		if ph.GoodFailed > 0 {
			p = append(p, fmt.Sprintf("phase %s: %d good-client calls failed", ph.Name, ph.GoodFailed))
		}
		if ph.GoodOK == 0 {
			p = append(p, fmt.Sprintf("phase %s: no good-client call succeeded", ph.Name))
		}
		if limit := r.Options.GoodP99; limit > 0 && ph.GoodP99 >= limit {
			p = append(p, fmt.Sprintf("phase %s: good-client p99 %s is not under %s", ph.Name, dur(ph.GoodP99), dur(limit)))
		}
		if ph.GoroutinesAfter > ph.GoroutinesBefore {
			p = append(p, fmt.Sprintf("phase %s: goroutines %d after, %d before", ph.Name, ph.GoroutinesAfter, ph.GoroutinesBefore))
		}
	}
	if r.MemoryVerdict == MemoryGrowing {
		p = append(p, fmt.Sprintf("memory grew: last-third mean %s vs middle-third mean %s", mib(r.RSSLastMean), mib(r.RSSMiddleMean)))
	}
	return p
}

// OK reports whether the run passed.
func (r *Report) OK() bool { return len(r.Problems()) == 0 }

// memoryVerdict compares the mean of the last third of rss with the mean of
// the middle third.
func memoryVerdict(rss []uint64) (middle, last uint64, verdict string) {
	if len(rss) < minSamplesForVerdict {
		return 0, 0, MemoryTooShort
	}
	third := len(rss) / 3
	mean := func(s []uint64) uint64 {
		var sum uint64
		for _, v := range s {
			sum += v
		}
		return sum / uint64(len(s))
	}
	middle = mean(rss[third : 2*third])
	last = mean(rss[len(rss)-third:])
	if last > middle && float64(last-middle) > growthRatio*float64(middle) && last-middle > growthBytes {
		return middle, last, MemoryGrowing
	}
	return middle, last, MemoryFlat
}

// WriteTo writes the report in the form docs/soak.md describes.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	o := r.Options
	secs := r.Elapsed.Seconds()
	rate := func(n uint64) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(n) / secs
	}
	fmt.Fprintf(&b, "soak report: %s on %s/%s, GOMAXPROCS=%d, NumCPU=%d, seed %d\n",
		r.Elapsed.Round(100*time.Millisecond), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(), o.Seed)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	fmt.Fprintf(&b, "  rpc         %d goroutines on a %d-connection parent.Client, echo bodies 0..%d B\n", o.Concurrency, o.PoolSize, o.MaxBody)
	fmt.Fprintf(&b, "    calls     %d ok, %d failed (%d wrong bytes), %.0f calls/s\n", r.CallsOK, r.CallsFailed, r.Mismatched, rate(r.CallsOK))
	fmt.Fprintf(&b, "    latency   p50 %s  p99 %s  max %s  (slowloris connections opened before the load)\n",
		dur(r.P50), dur(r.P99), dur(r.Max))
	for _, e := range r.CallErrors {
		fmt.Fprintf(&b, "    error     %s\n", e)
	}
	fmt.Fprintf(&b, "  proxy       %d streams at once through a fixed route to a SHA-256 sink, payloads 0..%s\n", o.Streams, mib(uint64(o.MaxStreamBytes)))
	fmt.Fprintf(&b, "    streams   %d ok, %d failed\n", r.StreamsOK, r.StreamsFailed)
	fmt.Fprintf(&b, "    bytes     %s sent, %s confirmed by the sink (count + SHA-256), %s/s\n",
		mib(r.ProxyBytesSent), mib(r.ProxyBytesConfirmed), mib(uint64(rate(r.ProxyBytesConfirmed))))
	fmt.Fprintf(&b, "    lost      %d B   corrupted %d B\n", r.LostBytes, r.CorruptedBytes)
	for _, e := range r.StreamErrors {
		fmt.Fprintf(&b, "    error     %s\n", e)
	}
	fmt.Fprintf(&b, "  slowloris   %d held (2 header bytes, then silence), %d evicted or timed out, %d cut otherwise (default limits: MaxConns %d, ReadFrameTimeout %s)\n",
		r.SlowlorisHeld, r.SlowlorisEvictedOrTimedOut, r.SlowlorisCut, enclave.DefaultMaxConns, r.ReadFrameTimeout)
	s := r.Server
	fmt.Fprintf(&b, "  server      conns open %d, total %d, rejected %d, evicted %d, dropped %d; requests %d, errors %d, panics %d; budget waits %d\n",
		s.OpenConns, s.TotalConns, s.RejectedConns, s.EvictedConns, s.DroppedConns, s.Requests, s.Errors, s.Panics, s.BudgetWaits)
	for _, ph := range r.Phases {
		fmt.Fprintf(&b, "  phase %-10s %s, %s\n", ph.Name, ph.Attack, ph.Elapsed.Round(100*time.Millisecond))
		fmt.Fprintf(&b, "    good      %d ok, %d failed; %d B echo p50 %s  p99 %s  max %s (limit p99 < %s)\n",
			ph.GoodOK, ph.GoodFailed, goodBody, dur(ph.GoodP50), dur(ph.GoodP99), dur(ph.GoodMax), dur(r.Options.GoodP99))
		for _, e := range ph.GoodErrors {
			fmt.Fprintf(&b, "    error     %s\n", e)
		}
		fmt.Fprintf(&b, "    attack    %d connections made, %d cut; %s\n", ph.AttackConns, ph.AttackCut, ph.Limits)
		fmt.Fprintf(&b, "    goroutines before %d, after %d\n", ph.GoroutinesBefore, ph.GoroutinesAfter)
	}
	fmt.Fprintf(&b, "  goroutines  before %d, peak %d, after %d (leaked %d)\n",
		r.GoroutinesBefore, r.GoroutinesPeak, r.GoroutinesAfter, max(r.Leaked(), 0))
	fmt.Fprintf(&b, "  memory      %s\n", r.RSSSource)
	fmt.Fprintf(&b, "    rss       first %s, last %s, max %s\n", mib(r.RSSFirst), mib(r.RSSLast), mib(r.RSSMax))
	if r.MemoryVerdict == MemoryTooShort {
		fmt.Fprintf(&b, "    verdict   %s (%d samples; at least %d needed)\n", r.MemoryVerdict, len(r.Samples), minSamplesForVerdict)
	} else {
		fmt.Fprintf(&b, "    verdict   %s (mean of the last third %s vs the middle third %s; growing means > +20%% and > +16 MiB)\n",
			r.MemoryVerdict, mib(r.RSSLastMean), mib(r.RSSMiddleMean))
	}
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(&b, "FAIL\n")
		for _, x := range p {
			fmt.Fprintf(&b, "  - %s\n", x)
		}
	} else {
		fmt.Fprintf(&b, "PASS\n")
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func mib(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
