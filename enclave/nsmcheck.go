package enclave

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/protocol"
)

// Defaults of the NSM checks, used for zero Config fields.
const (
	// DefaultNSMTimeout bounds each attestation request the checks make.
	DefaultNSMTimeout = 5 * time.Second
	// DefaultMaxClockSkew bounds the difference between the system clock
	// and the NSM's time.
	DefaultMaxClockSkew = 5 * time.Second
	// DefaultClockCheckInterval is how often a serving server re-checks its
	// clock against a fresh NSM document.
	DefaultClockCheckInterval = time.Minute
)

// Names of the checks made against the NSM, as they appear in health
// output and in refusals.
const (
	CheckNSM   = "nsm"   // the NSM answers an attestation request in time
	CheckDebug = "debug" // PCR0 is not all zeros (not a debug-mode enclave)
	CheckClock = "clock" // the system clock agrees with the NSM's timestamp
)

// What the non-file checks examine; CheckResult.File holds it.
const (
	nsmSubject   = "NSM attestation request"
	debugSubject = "PCR0 of the NSM's attestation document"
	clockSubject = "system clock minus the NSM document's timestamp"
)

// checkHints tell an operator what to do when a non-file check fails.
var checkHints = map[string]string{
	CheckNSM:   "run inside a Nitro Enclave, where /dev/nsm answers; for development only, pass --dev to downgrade this to a warning",
	CheckDebug: "start the enclave without --debug-mode, since the parent can read a debug-mode enclave's memory; to run one on purpose pass --allow-debug, or --dev for development",
	CheckClock: "correct the enclave's clock, which must follow the hypervisor's kvm-clock, or raise --max-clock-skew; for development only, pass --dev to downgrade this to a warning",
}

// ErrNoTrustedTime is returned by TrustedClock.Now when there is no NSM
// reading recent enough to anchor the time to.
var ErrNoTrustedTime = errors.New("enclave: no recent NSM time reading")

// ClockReading is one comparison of the system clock with the NSM's time,
// taken from the timestamp of a fresh attestation document.
type ClockReading struct {
	// NSMTime is the document's timestamp (millisecond precision).
	NSMTime time.Time
	// Skew is the system clock minus the NSM's time, estimated at the
	// midpoint of the request: positive when the system clock is ahead.
	Skew time.Duration
	// Uncertainty bounds the error of Skew and of NSMTime as a reading of
	// the NSM's clock at At: half the request's round trip plus the
	// timestamp's 1 ms resolution.
	Uncertainty time.Duration
	// At is the system time, with its monotonic reading, at the midpoint of
	// the request.
	At time.Time
	// RoundTrip is how long the NSM took to answer.
	RoundTrip time.Duration
}

// readNSM asks att for a document bound to a fresh nonce, bounded by
// timeout, and reads its timestamp and PCR0. The document's signature is
// not verified: see the package documentation ("Trusted time and the
// NSM") for why its contents can be trusted here.
func readNSM(ctx context.Context, att attest.Attester, timeout time.Duration) (ClockReading, []byte, error) {
	if att == nil {
		return ClockReading{}, nil, errors.New("no NSM configured")
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return ClockReading{}, nil, fmt.Errorf("making a nonce: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		doc []byte
		err error
	}
	// The NSM's ioctl cannot be interrupted: wait for it in a goroutine so
	// that a device that never answers cannot hold up the caller. Such a
	// goroutine stays blocked until the device answers.
	ch := make(chan answer, 1)
	t0 := time.Now()
	go func() {
		doc, err := att.Attest(actx, attest.Request{Nonce: nonce})
		ch <- answer{doc, err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-actx.Done():
		if err := ctx.Err(); err != nil {
			return ClockReading{}, nil, err
		}
		return ClockReading{}, nil, fmt.Errorf("no answer within %v", timeout)
	}
	t1 := time.Now()
	if a.err != nil {
		if err := ctx.Err(); err != nil {
			return ClockReading{}, nil, err
		}
		return ClockReading{}, nil, fmt.Errorf("the request failed: %w", a.err)
	}
	d, err := attest.ParseUnverified(a.doc)
	if err != nil {
		return ClockReading{}, nil, fmt.Errorf("the answer is not an attestation document: %w", err)
	}
	if !bytes.Equal(d.Nonce, nonce) {
		return ClockReading{}, nil, errors.New("the document does not carry the nonce just sent (not a fresh answer)")
	}
	rtt := t1.Sub(t0)
	mid := t0.Add(rtt / 2)
	r := ClockReading{
		NSMTime:     d.Timestamp,
		Skew:        mid.Sub(d.Timestamp),
		Uncertainty: rtt/2 + time.Millisecond,
		At:          mid,
		RoundTrip:   rtt,
	}
	var pcr0 []byte
	if !d.NitroTPM {
		pcr0 = d.PCRs[0]
	}
	return r, pcr0, nil
}

// formatSkew renders a skew for operators: "+1.234s (the system clock is
// ahead of the NSM)".
func formatSkew(d time.Duration) string {
	switch {
	case d > 0:
		return fmt.Sprintf("+%v (the system clock is ahead of the NSM)", d.Round(time.Millisecond))
	case d < 0:
		return fmt.Sprintf("%v (the system clock is behind the NSM)", d.Round(time.Millisecond))
	}
	return "0s"
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// clockResult is the clock check's result for reading r.
func clockResult(r ClockReading, maxSkew time.Duration) protocol.CheckResult {
	return protocol.CheckResult{
		Name: CheckClock, File: clockSubject,
		Found: formatSkew(r.Skew),
		Want:  fmt.Sprintf("within ±%v", maxSkew),
		// The uncertainty is not held against the clock: a slow NSM answer
		// must not make a correct clock fail.
		OK: abs(r.Skew) <= maxSkew,
	}
}

// nsmChecks asks att for a document and runs the nsm, debug and clock
// checks. It returns every result, the reading (nil when the NSM did not
// answer) and the failures that refuse a start: none under Config.Dev,
// and no debug failure under Config.AllowDebug (those are logged as
// warnings and marked Overridden instead). A canceled ctx is returned as
// err, and is not a check failure.
func (s *Server) nsmChecks(ctx context.Context) (results []protocol.CheckResult, reading *ClockReading, failed []protocol.CheckResult, err error) {
	cfg := s.cfg
	r, pcr0, rerr := readNSM(ctx, cfg.Attester, cfg.NSMTimeout)
	if rerr != nil && ctx.Err() != nil {
		return nil, nil, nil, rerr
	}
	if rerr != nil {
		const notChecked = "not checked: no document from the NSM"
		results = []protocol.CheckResult{
			{Name: CheckNSM, File: nsmSubject, Found: rerr.Error(), Want: fmt.Sprintf("a fresh document within %v", cfg.NSMTimeout)},
			{Name: CheckDebug, File: debugSubject, Found: notChecked, Want: "not all zeros"},
			{Name: CheckClock, File: clockSubject, Found: notChecked, Want: fmt.Sprintf("within ±%v", cfg.MaxClockSkew)},
		}
	} else {
		results = []protocol.CheckResult{
			{Name: CheckNSM, File: nsmSubject, Found: fmt.Sprintf("answered in %v", r.RoundTrip.Round(time.Microsecond)),
				Want: fmt.Sprintf("a fresh document within %v", cfg.NSMTimeout), OK: true},
			debugResult(pcr0),
			clockResult(r, cfg.MaxClockSkew),
		}
		reading = &r
	}
	for i := range results {
		res := &results[i]
		if res.OK {
			continue
		}
		switch {
		case cfg.Dev:
			res.Overridden = true
			s.log.Warn("DEVELOPMENT MODE: startup check failed and was overridden by --dev; this server must not be trusted",
				"check", res.Name, "examined", res.File, "found", res.Found, "required", res.Want)
		case rerr != nil && res.Name != CheckNSM:
			// Only the NSM failure is reported: the others were not run.
		case res.Name == CheckDebug && cfg.AllowDebug:
			res.Overridden = true
			s.log.Warn("DEBUG MODE: PCR0 is all zeros, so this is a debug-mode enclave whose memory and console the parent can read; it was accepted only because --allow-debug is set: never give it secrets",
				"check", res.Name, "found", res.Found)
		default:
			failed = append(failed, *res)
		}
	}
	return results, reading, failed, nil
}

// debugResult is the debug check's result for PCR0.
func debugResult(pcr0 []byte) protocol.CheckResult {
	res := protocol.CheckResult{Name: CheckDebug, File: debugSubject, Want: "not all zeros"}
	switch {
	case len(pcr0) == 0:
		res.Found = "absent"
	case bytes.Equal(pcr0, make([]byte, len(pcr0))):
		res.Found = "all zeros, a debug-mode enclave"
	default:
		res.Found = fmt.Sprintf("%x", pcr0)
		res.OK = true
	}
	return res
}

// nsmState is the server's part of the NSM checks: their results, the
// last clock reading and the counters.
type nsmState struct {
	startMu  sync.Mutex // serializes the startup checks; held across the NSM request
	mu       sync.Mutex // guards the fields below; never held across a request
	done     bool       // the startup checks ran to a decision
	err      error      // their refusal, if any
	results  []protocol.CheckResult
	clock    TrustedClock
	checks   uint64 // NSM readings taken
	exceeded uint64 // readings whose skew was past the bound
	failures uint64 // NSM requests that failed or timed out
}

// startNSMChecks runs the NSM checks once, before the server first listens
// or serves; later calls return the first decision. A refusal is a
// *CheckError matching ErrStartupCheck.
func (s *Server) startNSMChecks(ctx context.Context) error {
	st := &s.nsm
	st.startMu.Lock()
	defer st.startMu.Unlock()
	st.mu.Lock()
	done, decided := st.done, st.err
	st.mu.Unlock()
	if done {
		return decided
	}
	results, reading, failed, err := s.nsmChecks(ctx)
	if err != nil {
		return fmt.Errorf("enclave: NSM startup checks: %w", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.done = true
	st.results = results
	if reading != nil {
		st.checks++
		if abs(reading.Skew) > s.cfg.MaxClockSkew {
			st.exceeded++
		}
		st.clock.record(*reading)
	} else {
		st.failures++
	}
	if len(failed) > 0 {
		st.err = &CheckError{Failed: failed}
	}
	return st.err
}

// nsmResults returns the latest results of the NSM checks (none before
// Listen or Serve).
func (s *Server) nsmResults() []protocol.CheckResult {
	s.nsm.mu.Lock()
	defer s.nsm.mu.Unlock()
	return append([]protocol.CheckResult(nil), s.nsm.results...)
}

// watchClock re-checks the clock against a fresh NSM document every
// ClockCheckInterval until ctx is done. The returned function stops it and
// waits for it.
func (s *Server) watchClock(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.cfg.ClockCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.recheckClock(ctx)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// recheckClock takes one NSM reading, records it, updates the nsm and clock
// results and logs an error when the NSM fails or the skew is past the
// bound.
func (s *Server) recheckClock(ctx context.Context) {
	r, _, err := readNSM(ctx, s.cfg.Attester, s.cfg.NSMTimeout)
	if err != nil && ctx.Err() != nil {
		return
	}
	st := &s.nsm
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.failures++
		st.setResult(protocol.CheckResult{Name: CheckNSM, File: nsmSubject, Found: err.Error(),
			Want: fmt.Sprintf("a fresh document within %v", s.cfg.NSMTimeout), Overridden: s.cfg.Dev})
		s.log.Error("enclave: clock re-check: the NSM did not give a fresh attestation document; trusted time goes stale if this persists",
			"check", CheckNSM, "err", err, "failures", st.failures)
		return
	}
	st.checks++
	st.clock.record(r)
	st.setResult(protocol.CheckResult{Name: CheckNSM, File: nsmSubject,
		Found: fmt.Sprintf("answered in %v", r.RoundTrip.Round(time.Microsecond)),
		Want:  fmt.Sprintf("a fresh document within %v", s.cfg.NSMTimeout), OK: true})
	res := clockResult(r, s.cfg.MaxClockSkew)
	if !res.OK {
		st.exceeded++
		res.Overridden = s.cfg.Dev
		s.log.Error("enclave: clock re-check: the system clock disagrees with the NSM beyond the bound; correct the clock (TrustedClock time is unaffected)",
			"check", CheckClock, "skew", r.Skew, "max_skew", s.cfg.MaxClockSkew, "found", res.Found)
	}
	st.setResult(res)
}

// setResult replaces the result of the same name; st.mu held.
func (st *nsmState) setResult(r protocol.CheckResult) {
	for i := range st.results {
		if st.results[i].Name == r.Name {
			st.results[i] = r
			return
		}
	}
	st.results = append(st.results, r)
}

// TrustedClock tells time anchored to the NSM rather than to the system
// clock, which code inside the enclave can set. Get a server's with
// Server.TrustedClock; the server feeds it a reading at start and at each
// clock re-check.
//
// Now returns the timestamp of the last NSM document plus the time elapsed
// since it was read on the monotonic clock (which setting the system clock
// does not move). It guarantees that the result differs from the NSM's own
// time by at most the reading's Uncertainty (half the request's round trip
// plus 1 ms) plus what the monotonic clock drifted since the reading. The
// drift is bounded by refusing old readings: past the clock's maximum age
// (for a server's, two ClockCheckIntervals plus NSMTimeout) Now returns
// ErrNoTrustedTime rather than a time. It does not guarantee monotonic
// results across readings: a new reading may move Now back by up to the
// two readings' uncertainties plus the drift.
//
// The zero TrustedClock has no reading; Now then returns ErrNoTrustedTime.
// It is safe for concurrent use.
type TrustedClock struct {
	mu     sync.Mutex
	last   ClockReading
	ok     bool
	maxAge time.Duration
}

// NewTrustedClock returns a clock with no reading that refuses readings
// older than maxAge (no limit when maxAge is zero or negative). Feed it
// with Record.
func NewTrustedClock(maxAge time.Duration) *TrustedClock {
	return &TrustedClock{maxAge: maxAge}
}

// Record makes r the clock's anchor.
func (c *TrustedClock) Record(r ClockReading) { c.record(r) }

func (c *TrustedClock) record(r ClockReading) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last, c.ok = r, true
}

// Now returns the NSM-anchored current time, in UTC, or ErrNoTrustedTime
// when there is no reading or the last one is older than the clock's
// maximum age.
func (c *TrustedClock) Now() (time.Time, error) {
	c.mu.Lock()
	last, ok, maxAge := c.last, c.ok, c.maxAge
	c.mu.Unlock()
	if !ok {
		return time.Time{}, ErrNoTrustedTime
	}
	age := time.Since(last.At)
	if maxAge > 0 && age > maxAge {
		return time.Time{}, fmt.Errorf("%w: the last reading is %v old, the limit is %v", ErrNoTrustedTime, age.Round(time.Millisecond), maxAge)
	}
	return last.NSMTime.Add(age).UTC(), nil
}

// Last returns the latest reading, and false when there is none.
func (c *TrustedClock) Last() (ClockReading, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.ok
}

// TrustedClock returns the server's NSM-anchored clock. It has a reading
// once Listen or Serve has run the startup checks; readings older than
// twice ClockCheckInterval plus NSMTimeout (a missed re-check) are
// refused.
func (s *Server) TrustedClock() *TrustedClock { return &s.nsm.clock }

// ClockStats are the NSM clock counters, part of Stats.
type ClockStats struct {
	// ClockSkew is the system clock minus the NSM's time at the last
	// reading (zero before the first).
	ClockSkew time.Duration
	// ClockChecks counts NSM time readings (the startup check included).
	ClockChecks uint64
	// ClockSkewExceeded counts readings whose skew was past MaxClockSkew.
	ClockSkewExceeded uint64
	// NSMFailures counts NSM requests of the checks that failed or timed out.
	NSMFailures uint64
}

func (s *Server) clockStats() ClockStats {
	s.nsm.mu.Lock()
	defer s.nsm.mu.Unlock()
	last, _ := s.nsm.clock.Last()
	return ClockStats{ClockSkew: last.Skew, ClockChecks: s.nsm.checks, ClockSkewExceeded: s.nsm.exceeded, NSMFailures: s.nsm.failures}
}

// describeFailure writes one failed check for CheckError.
func describeFailure(b *strings.Builder, r protocol.CheckResult) {
	if hint, ok := checkHints[r.Name]; ok && !strings.HasPrefix(r.File, "/") {
		fmt.Fprintf(b, "startup check %q failed: %s: %s, required %s (%s)", r.Name, r.File, r.Found, r.Want, hint)
		return
	}
	fmt.Fprintf(b, "startup check %q failed: %s contains %q, required %q", r.Name, r.File, r.Found, r.Want)
}
