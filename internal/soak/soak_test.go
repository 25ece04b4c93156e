package soak

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRun runs a short soak with small counts and checks the report's
// invariants. It asserts counts, never latencies.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{
		Duration:       2 * time.Second,
		Concurrency:    8,
		PoolSize:       2,
		MaxBody:        8 << 10,
		Streams:        4,
		MaxStreamBytes: 256 << 10,
		Slowloris:      50,
		Tricklers:      20,
		GoodP99:        time.Minute, // latencies are not asserted here
		ProgressEvery:  time.Second,
		Out:            &out,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	rep.WriteTo(&text)
	t.Logf("progress:\n%s\nreport:\n%s", out.String(), text.String())

	if p := rep.Problems(); len(p) > 0 {
		t.Errorf("problems: %q", p)
	}
	if rep.CallsOK == 0 || rep.CallsFailed != 0 || rep.Mismatched != 0 {
		t.Errorf("calls: %d ok, %d failed, %d mismatched; want some ok and none failed", rep.CallsOK, rep.CallsFailed, rep.Mismatched)
	}
	if rep.StreamsOK == 0 || rep.StreamsFailed != 0 {
		t.Errorf("streams: %d ok, %d failed; want some ok and none failed", rep.StreamsOK, rep.StreamsFailed)
	}
	if rep.LostBytes != 0 || rep.CorruptedBytes != 0 {
		t.Errorf("proxy lost %d and corrupted %d bytes", rep.LostBytes, rep.CorruptedBytes)
	}
	if rep.ProxyBytesConfirmed != rep.ProxyBytesSent {
		t.Errorf("proxy: %d bytes sent, %d confirmed", rep.ProxyBytesSent, rep.ProxyBytesConfirmed)
	}
	if rep.SlowlorisHeld != 50 || rep.SlowlorisCut != 0 {
		t.Errorf("slowloris: %d held, %d cut; want 50 held, 0 cut", rep.SlowlorisHeld, rep.SlowlorisCut)
	}
	// Every echo call reached the server, and nothing else did: the
	// slowloris connections never completed a frame.
	if s := rep.Server; s.Requests != rep.CallsOK || s.Errors != 0 || s.Panics != 0 || s.RejectedConns != 0 || s.DroppedConns != 0 {
		t.Errorf("server stats %+v; want %d requests and no errors, panics, rejected or dropped connections", s, rep.CallsOK)
	}
	if s := rep.Server; s.OpenConns < 50 {
		t.Errorf("server had %d open connections at the end; want at least the 50 slowloris ones", s.OpenConns)
	}
	if rep.Leaked() > 0 {
		t.Errorf("%d goroutines leaked (%d before, %d after)", rep.Leaked(), rep.GoroutinesBefore, rep.GoroutinesAfter)
	}
	if rep.GoroutinesPeak <= rep.GoroutinesBefore {
		t.Errorf("goroutine peak %d is not above the start %d: were the samples taken?", rep.GoroutinesPeak, rep.GoroutinesBefore)
	}
	if len(rep.Samples) == 0 || rep.RSSMax == 0 || rep.RSSFirst == 0 {
		t.Errorf("%d samples, RSS first %d max %d; want samples with a non-zero RSS", len(rep.Samples), rep.RSSFirst, rep.RSSMax)
	}
	if rep.MemoryVerdict == MemoryGrowing {
		t.Errorf("memory verdict %q", rep.MemoryVerdict)
	}
	if !strings.Contains(text.String(), "\nPASS\n") {
		t.Errorf("report does not end in PASS:\n%s", text.String())
	}
	if !strings.Contains(out.String(), "calls/s") {
		t.Errorf("no progress line in:\n%s", out.String())
	}
}

// TestRunInterrupted: a context that ends before Duration ends the run early, marks the
// report and still stops everything.
func TestRunInterrupted(t *testing.T) {
	// Usually the context ends during the loads; if set-up is slow it
	// ends there, and Run returns its error instead.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, Options{Duration: time.Hour, Concurrency: 2, Streams: 1, MaxStreamBytes: 1 << 10, Slowloris: 2})
	if err == nil {
		t.Logf("interrupted after %v of the loads", rep.Elapsed)
		if !rep.Interrupted {
			t.Errorf("report not marked interrupted")
		}
		if rep.OK() {
			t.Errorf("an interrupted run passed")
		}
		if rep.Leaked() > 0 {
			t.Errorf("%d goroutines leaked", rep.Leaked())
		}
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: %v; want a report or context.DeadlineExceeded", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{Duration: time.Second}, true},
		{"no duration", Options{}, false},
		{"max concurrency", Options{Duration: time.Second, Concurrency: MaxConcurrency}, true},
		{"too much concurrency", Options{Duration: time.Second, Concurrency: MaxConcurrency + 1}, false},
		{"pool too big", Options{Duration: time.Second, PoolSize: 65}, false},
		{"body too big", Options{Duration: time.Second, MaxBody: 1 << 20}, false},
		{"negative streams", Options{Duration: time.Second, Streams: -1}, false},
		{"negative stream bytes", Options{Duration: time.Second, MaxStreamBytes: -1}, false},
		{"negative slowloris", Options{Duration: time.Second, Slowloris: -1}, false},
		{"negative progress", Options{Duration: time.Second, ProgressEvery: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v; want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrOptions) {
				t.Fatalf("error %v does not match ErrOptions", err)
			}
		})
	}
}

func TestFitSlowloris(t *testing.T) {
	tests := []struct {
		name      string
		limit     uint64
		slowloris int
		want      int
		note      bool
	}{
		{"unknown limit", 0, 1000, 1000, false},
		{"enough", 1 << 20, 1000, 1000, false},
		// others = 6*100 + 2*4 + 256 = 864
		{"exactly enough", 864 + 2000, 1000, 1000, false},
		{"lowered", 1500, 1000, (1500 - 864) / 2, true},
		{"none fit", 100, 1000, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &runner{o: Options{Slowloris: tt.slowloris, Streams: 100, PoolSize: 4}.withDefaults()}
			r.fitSlowloris(tt.limit)
			if r.o.Slowloris != tt.want {
				t.Errorf("slowloris %d; want %d", r.o.Slowloris, tt.want)
			}
			if got := len(r.rep.Notes) > 0; got != tt.note {
				t.Errorf("note given = %v; want %v (%q)", got, tt.note, r.rep.Notes)
			}
		})
	}
}

func TestMemoryVerdict(t *testing.T) {
	const M = 1 << 20
	flat := func(n int, v uint64) []uint64 {
		s := make([]uint64, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	tests := []struct {
		name string
		rss  []uint64
		want string
	}{
		{"too short", flat(5, 100*M), MemoryTooShort},
		{"flat", flat(30, 100*M), MemoryFlat},
		{"warm-up ignored", append(flat(10, 10*M), flat(20, 100*M)...), MemoryFlat},
		{"grew 30% and 30 MiB", append(flat(20, 100*M), flat(10, 130*M)...), MemoryGrowing},
		{"grew 30% but only 3 MiB", append(flat(20, 10*M), flat(10, 13*M)...), MemoryFlat},
		{"grew 20 MiB but only 10%", append(flat(20, 200*M), flat(10, 220*M)...), MemoryFlat},
		{"shrank", append(flat(20, 200*M), flat(10, 100*M)...), MemoryFlat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, got := memoryVerdict(tt.rss); got != tt.want {
				t.Errorf("verdict %q; want %q", got, tt.want)
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	// Every value falls in a bucket whose upper edge is at least the
	// value and within 1/16 of it; buckets are contiguous.
	for _, v := range []uint64{0, 1, 15, 16, 31, 32, 33, 63, 64, 1000, 123456789, 1 << 40, 1<<63 - 1, 1<<64 - 1} {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, i)
		}
		up := bucketUpper(i)
		if up < v || (v >= 16 && float64(up-v) > float64(v)/16) {
			t.Errorf("value %d: bucket %d upper edge %d", v, i, up)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Errorf("value %d: previous bucket's upper edge %d is not below it", v, bucketUpper(i-1))
		}
	}
	var h histogram
	for i := 1; i <= 100; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	s := h.snap()
	if s.total() != 100 {
		t.Fatalf("total %d; want 100", s.total())
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		got := s.quantile(c.q)
		if got < c.want || got > c.want+c.want/16 {
			t.Errorf("quantile(%v) = %v; want %v (+1/16)", c.q, got, c.want)
		}
	}
	if d := s.since(s).total(); d != 0 {
		t.Errorf("a snapshot minus itself has %d values", d)
	}
	if m := time.Duration(h.max.Load()); m != 100*time.Millisecond {
		t.Errorf("max %v; want 100ms", m)
	}
}

func TestReportProblems(t *testing.T) {
	good := Report{CallsOK: 1, StreamsOK: 1, MemoryVerdict: MemoryFlat, GoroutinesBefore: 3, GoroutinesAfter: 3}
	if p := good.Problems(); len(p) != 0 {
		t.Fatalf("good report has problems %q", p)
	}
	tests := []struct {
		name   string
		modify func(*Report)
		want   string
	}{
		{"failed call", func(r *Report) { r.CallsFailed = 1 }, "echo calls failed"},
		{"lost byte", func(r *Report) { r.LostBytes = 1 }, "proxy lost 1"},
		{"corrupted byte", func(r *Report) { r.CorruptedBytes = 1 }, "corrupted 1"},
		{"failed stream", func(r *Report) { r.StreamsFailed = 1 }, "streams failed"},
		{"cut", func(r *Report) { r.SlowlorisCut = 1 }, "slowloris connections were cut"},
		{"leak", func(r *Report) { r.GoroutinesAfter = 4 }, "1 goroutines leaked"},
		{"memory", func(r *Report) { r.MemoryVerdict = MemoryGrowing }, "memory grew"},
		{"interrupted", func(r *Report) { r.Interrupted = true }, "interrupted"},
		{"no calls", func(r *Report) { r.CallsOK = 0 }, "no echo call succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.modify(&r)
			p := strings.Join(r.Problems(), "; ")
			if !strings.Contains(p, tt.want) {
				t.Errorf("problems %q; want one containing %q", p, tt.want)
			}
			var b bytes.Buffer
			r.WriteTo(&b)
			if !strings.Contains(b.String(), "\nFAIL\n") {
				t.Errorf("report does not say FAIL:\n%s", b.String())
			}
		})
	}
}

func TestReportPhaseProblems(t *testing.T) {
	ok := PhaseReport{Name: PhaseIngress, GoodOK: 10, GoodP99: time.Millisecond, GoroutinesBefore: 5, GoroutinesAfter: 5}
	tests := []struct {
		name   string
		modify func(*PhaseReport)
		want   string
	}{
		{"failed good call", func(p *PhaseReport) { p.GoodFailed = 2 }, "phase ingress: 2 good-client calls failed"},
		{"no good call", func(p *PhaseReport) { p.GoodOK = 0 }, "no good-client call succeeded"},
		{"slow p99", func(p *PhaseReport) { p.GoodP99 = 150 * time.Millisecond }, "good-client p99 150ms is not under 100ms"},
		{"goroutines", func(p *PhaseReport) { p.GoroutinesAfter = 9 }, "goroutines 9 after, 5 before"},
	}
	base := Report{Options: Options{GoodP99: DefaultGoodP99}, CallsOK: 1, StreamsOK: 1, MemoryVerdict: MemoryFlat, Phases: []PhaseReport{ok}}
	if p := base.Problems(); len(p) != 0 {
		t.Fatalf("good phases have problems %q", p)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ph := ok
			tt.modify(&ph)
			r := base
			r.Phases = []PhaseReport{ph}
			if p := strings.Join(r.Problems(), "; "); !strings.Contains(p, tt.want) {
				t.Errorf("problems %q; want one containing %q", p, tt.want)
			}
		})
	}
}
