package enclave

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
)

// emulatedNSM returns an NSM emulator with non-zero PCRs (changed by opts'
// other fields) and a session to it, closed at cleanup.
func emulatedNSM(t testing.TB, opts nsmtest.Options) (*nsmtest.Emulator, *attest.NSM) {
	t.Helper()
	if opts.PCRs == nil {
		opts.PCRs = nsmtest.DevPCRs()
	}
	emu, err := nsmtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return emu, n
}

// attesterFunc adapts a function to attest.Attester.
type attesterFunc func(ctx context.Context, r attest.Request) ([]byte, error)

func (f attesterFunc) Attest(ctx context.Context, r attest.Request) ([]byte, error) { return f(ctx, r) }

// Each NSM check refuses to start with one line naming it, what was found
// and what to do; --dev and --allow-debug turn the refusals into warnings.
func TestNSMStartupChecks(t *testing.T) {
	stuck := attesterFunc(func(ctx context.Context, _ attest.Request) ([]byte, error) {
		<-ctx.Done() // an NSM that never answers
		return nil, ctx.Err()
	})
	broken := attesterFunc(func(context.Context, attest.Request) ([]byte, error) {
		return nil, errors.New("ioctl: input/output error")
	})
	// A replayed document: valid, but not bound to the nonce just sent.
	_, old := emulatedNSM(t, nsmtest.Options{})
	oldDoc, err := old.Attest(context.Background(), attest.Request{Nonce: []byte("yesterday")})
	if err != nil {
		t.Fatal(err)
	}
	replay := attesterFunc(func(context.Context, attest.Request) ([]byte, error) { return oldDoc, nil })

	type nsmKind int
	const (
		emulated nsmKind = iota
		none
		stuckNSM
		brokenNSM
		replayNSM
	)
	tests := []struct {
		name       string
		kind       nsmKind
		emu        nsmtest.Options
		tweak      func(*Config)
		refused    string   // the failed check, "" when it starts
		mention    []string // in the refusal
		overridden []string // checks that failed but were overridden
		warn       string   // in the log
	}{
		{name: "all pass", kind: emulated},
		{name: "no NSM", kind: none, refused: CheckNSM, mention: []string{"no NSM configured", "/dev/nsm", "--dev"}},
		{name: "NSM does not answer", kind: stuckNSM, refused: CheckNSM, mention: []string{"no answer within 2s", "--dev"}},
		{name: "NSM fails", kind: brokenNSM, refused: CheckNSM, mention: []string{"input/output error"}},
		{name: "NSM replays", kind: replayNSM, refused: CheckNSM, mention: []string{"nonce"}},
		{name: "debug mode", emu: nsmtest.Options{Debug: true}, refused: CheckDebug, mention: []string{"PCR0", "all zeros", "--allow-debug", "--debug-mode"}},
		{name: "debug mode allowed", emu: nsmtest.Options{Debug: true}, tweak: func(c *Config) { c.AllowDebug = true },
			overridden: []string{CheckDebug}, warn: "DEBUG MODE"},
		{name: "debug mode in dev", emu: nsmtest.Options{Debug: true}, tweak: func(c *Config) { c.Dev = true },
			overridden: []string{CheckDebug}, warn: "DEVELOPMENT MODE"},
		{name: "clock behind", emu: nsmtest.Options{ClockOffset: 12 * time.Second}, refused: CheckClock,
			mention: []string{"-12s", "behind the NSM", "within ±5s", "--max-clock-skew"}},
		{name: "clock ahead", emu: nsmtest.Options{ClockOffset: -6 * time.Hour}, refused: CheckClock,
			mention: []string{"+6h0m0s", "ahead of the NSM"}},
		{name: "clock within the default bound", emu: nsmtest.Options{ClockOffset: 3 * time.Second}},
		{name: "clock within a raised bound", emu: nsmtest.Options{ClockOffset: 12 * time.Second}, tweak: func(c *Config) { c.MaxClockSkew = 15 * time.Second }},
		{name: "clock past a lowered bound", emu: nsmtest.Options{ClockOffset: 3 * time.Second}, tweak: func(c *Config) { c.MaxClockSkew = time.Second },
			refused: CheckClock, mention: []string{"within ±1s"}},
		{name: "clock in dev", emu: nsmtest.Options{ClockOffset: time.Minute}, tweak: func(c *Config) { c.Dev = true },
			overridden: []string{CheckClock}, warn: "DEVELOPMENT MODE"},
		{name: "no NSM in dev", kind: none, tweak: func(c *Config) { c.Dev = true },
			overridden: []string{CheckNSM, CheckDebug, CheckClock}, warn: "DEVELOPMENT MODE"},
		{name: "no NSM with debug allowed", kind: none, tweak: func(c *Config) { c.AllowDebug = true }, refused: CheckNSM, mention: []string{"no NSM configured"}},
		{name: "stuck NSM in dev", kind: stuckNSM, tweak: func(c *Config) { c.Dev = true },
			overridden: []string{CheckNSM, CheckDebug, CheckClock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs syncbuf.Buffer
				cfg := testConfig()
				cfg.Logger = newTextLogger(&logs)
				cfg.NSMTimeout = 2 * time.Second
				switch tt.kind {
				case emulated:
					_, cfg.Attester = emulatedNSM(t, tt.emu)
				case none:
					cfg.Attester = nil
				case stuckNSM:
					cfg.Attester = stuck
				case brokenNSM:
					cfg.Attester = broken
				case replayNSM:
					cfg.Attester = replay
				}
				if tt.tweak != nil {
					tt.tweak(&cfg)
				}
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ln := newPipeListener(nil)
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- s.ServeListener(ctx, ln) }()
				if tt.refused != "" {
					err := <-done
					cancel()
					var ce *CheckError
					if !errors.As(err, &ce) || !errors.Is(err, ErrStartupCheck) {
						t.Fatalf("ServeListener = %v; want a refusal", err)
					}
					msg := err.Error()
					if len(ce.Failed) != 1 || ce.Failed[0].Name != tt.refused || strings.Contains(msg, "\n") {
						t.Fatalf("refusal %q; want one line about check %q", msg, tt.refused)
					}
					for _, w := range append([]string{`startup check "` + tt.refused + `" failed`}, tt.mention...) {
						if !strings.Contains(msg, w) {
							t.Errorf("refusal %q does not mention %q", msg, w)
						}
					}
					if _, err := ln.Dial(); !errors.Is(err, net.ErrClosed) {
						t.Errorf("the listener was left open after the refusal (Dial = %v)", err)
					}
					if strings.Contains(logs.String(), "DEBUG MODE") {
						t.Errorf("a debug-mode warning for a check that did not run:\n%s", logs.String())
					}
					// The decision stands: a second attempt is refused too.
					if err := s.Listen(t.Context()); !errors.Is(err, ErrStartupCheck) {
						t.Errorf("Listen after a refusal = %v", err)
					}
					return
				}
				c := pipeClient(t, ln)
				r := c.call(protocol.MethodHealth, 1, nil)
				var h protocol.HealthResponse
				if err := protocol.Unmarshal(r.Body, &h); err != nil {
					t.Fatal(err)
				}
				names := map[string]protocol.CheckResult{}
				for _, cr := range h.Checks {
					names[cr.Name] = cr
				}
				for _, n := range []string{"rng", "clocksource", CheckNSM, CheckDebug, CheckClock} {
					cr, ok := names[n]
					if !ok {
						t.Fatalf("health lacks check %q: %+v", n, h.Checks)
					}
					want := !contains(tt.overridden, n)
					if cr.OK != want || cr.Overridden == want {
						t.Errorf("check %s: ok=%v overridden=%v, want ok=%v", n, cr.OK, cr.Overridden, want)
					}
				}
				if tt.warn != "" && !strings.Contains(logs.String(), tt.warn) {
					t.Errorf("log lacks %q:\n%s", tt.warn, logs.String())
				}
				c.nc.Close()
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// While serving, the clock is re-checked against a fresh NSM document every
// ClockCheckInterval; the skew reaches Stats, health and the log, and the
// TrustedClock follows the NSM, not the system clock.
func TestClockRecheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncbuf.Buffer
		emu, n := emulatedNSM(t, nsmtest.Options{})
		var fail atomic.Bool
		cfg := testConfig()
		cfg.Logger = newTextLogger(&logs)
		cfg.ClockCheckInterval = 10 * time.Minute
		cfg.NSMTimeout = time.Second
		cfg.Attester = attesterFunc(func(ctx context.Context, r attest.Request) ([]byte, error) {
			if fail.Load() {
				return nil, errors.New("ioctl: input/output error")
			}
			return n.Attest(ctx, r)
		})
		s, ln, stop := bubbleServer(t, cfg, nil)
		_ = ln
		synctest.Wait()
		tc := s.TrustedClock()
		check := func(step string, checks, exceeded, failures uint64, skew time.Duration) {
			t.Helper()
			st := s.Stats()
			if st.ClockChecks != checks || st.ClockSkewExceeded != exceeded || st.NSMFailures != failures || st.ClockSkew != skew {
				t.Fatalf("%s: stats %+v; want %d checks, %d exceeded, %d failures, skew %v", step, st.ClockStats, checks, exceeded, failures, skew)
			}
		}
		check("start", 1, 0, 0, 0)

		// Nothing happens before the interval is over.
		time.Sleep(10*time.Minute - time.Nanosecond)
		synctest.Wait()
		check("just before the interval", 1, 0, 0, 0)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		check("first re-check", 2, 0, 0, 0)

		// The system clock falls 9 s behind the NSM (fake time: no RTT, so
		// the skew is exact).
		emu.SetClockOffset(9 * time.Second)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		check("skew past the bound", 3, 1, 0, -9*time.Second)
		if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "check=clock") {
			t.Fatalf("no error logged for the skew:\n%s", logs.String())
		}
		for _, cr := range s.Checks() {
			if cr.Name == CheckClock && (cr.OK || !strings.Contains(cr.Found, "-9s")) {
				t.Fatalf("clock check after the re-check: %+v", cr)
			}
		}
		now, err := tc.Now()
		if want := time.Now().Add(9 * time.Second).UTC(); err != nil || !now.Equal(want) {
			t.Fatalf("TrustedClock.Now = %v, %v; want the NSM's time %v", now, err, want)
		}
		time.Sleep(3 * time.Minute)
		if now, err := tc.Now(); err != nil || !now.Equal(time.Now().Add(9*time.Second).UTC()) {
			t.Fatalf("TrustedClock.Now between readings = %v, %v", now, err)
		}

		// The NSM stops answering: failures are counted and logged, and
		// trusted time goes stale after a missed re-check.
		fail.Store(true)
		time.Sleep(7 * time.Minute)
		synctest.Wait()
		check("NSM failing", 3, 1, 1, -9*time.Second)
		if _, err := tc.Now(); err != nil {
			t.Fatalf("TrustedClock.Now 10m after the last reading: %v", err)
		}
		time.Sleep(10*time.Minute + time.Second + time.Nanosecond) // 2×interval + NSMTimeout, and a bit
		synctest.Wait()
		if _, err := tc.Now(); !errors.Is(err, ErrNoTrustedTime) {
			t.Fatalf("TrustedClock.Now with a stale reading = %v; want ErrNoTrustedTime", err)
		}
		for _, cr := range s.Checks() {
			if cr.Name == CheckNSM && cr.OK {
				t.Fatalf("nsm check while failing: %+v", cr)
			}
		}

		// It recovers, with the clock corrected.
		fail.Store(false)
		emu.SetClockOffset(0)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		check("recovered", 4, 1, 2, 0)
		if _, err := tc.Now(); err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		// The re-check goroutine is gone with Serve.
		c := s.Stats().ClockChecks
		time.Sleep(time.Hour)
		synctest.Wait()
		if s.Stats().ClockChecks != c {
			t.Fatal("the clock was re-checked after Serve returned")
		}
	})
}

func TestTrustedClockZero(t *testing.T) {
	var c TrustedClock
	if _, err := c.Now(); !errors.Is(err, ErrNoTrustedTime) {
		t.Fatalf("Now without a reading = %v", err)
	}
	if _, ok := c.Last(); ok {
		t.Fatal("Last reports a reading")
	}
}

func TestNSMConfigValidate(t *testing.T) {
	for _, c := range []Config{{MaxClockSkew: -1}, {ClockCheckInterval: -time.Second}, {ClockCheckInterval: time.Millisecond}, {NSMTimeout: -1}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
}

// oldHealth is enclavekit.health as clients before the clock key decode it.
type oldHealth struct {
	Version       string           `cbor:"1,keyasint"`
	Dev           bool             `cbor:"2,keyasint"`
	UptimeMillis  uint64           `cbor:"3,keyasint"`
	Checks        []oldCheckResult `cbor:"4,keyasint"`
	OpenConns     uint64           `cbor:"5,keyasint"`
	RejectedConns uint64           `cbor:"6,keyasint"`
	TotalConns    uint64           `cbor:"7,keyasint"`
}

type oldCheckResult struct {
	Name       string `cbor:"1,keyasint"`
	File       string `cbor:"2,keyasint"`
	Found      string `cbor:"3,keyasint"`
	Want       string `cbor:"4,keyasint"`
	OK         bool   `cbor:"5,keyasint"`
	Overridden bool   `cbor:"6,keyasint"`
}

// Health stays decodable by older clients, which reject unknown keys: the
// clock (key 8) is sent only when asked for, and the new checks travel as
// ordinary entries of key 4.
func TestHealthCompatibility(t *testing.T) {
	checkLeaks(t)
	_, addr := startServer(t, testConfig(), nil)
	c := dial(t, addr)
	mustMarshal := func(v any) []byte {
		b, err := protocol.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, tt := range []struct {
		name      string
		body      []byte
		code      protocol.Code
		wantClock bool
	}{
		{"empty body, as older clients send", nil, 0, false},
		{"clock not asked", mustMarshal(&protocol.HealthRequest{}), 0, false},
		{"clock asked", mustMarshal(&protocol.HealthRequest{Clock: true}), 0, true},
		{"a newer client's unknown key is ignored", mustMarshal(map[uint64]any{1: true, 9: "more"}), 0, true},
		{"clock not a bool", mustMarshal(map[uint64]any{1: 5}), protocol.CodeBadRequest, false},
		{"clock null", []byte{0xa1, 0x01, 0xf6}, protocol.CodeBadRequest, false},
		{"not a map", []byte{0x01}, protocol.CodeBadRequest, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := c.call(protocol.MethodHealth, uint64(i+1), tt.body)
			if r.Code != tt.code {
				t.Fatalf("code %d, want %d", r.Code, tt.code)
			}
			if tt.code != 0 {
				return
			}
			var h protocol.HealthResponse
			if err := protocol.Unmarshal(r.Body, &h); err != nil {
				t.Fatal(err)
			}
			if (h.Clock != nil) != tt.wantClock || len(h.Checks) != 5 {
				t.Fatalf("clock %+v, %d checks; want clock %v, 5 checks", h.Clock, len(h.Checks), tt.wantClock)
			}
			if tt.wantClock && (h.Clock.Checks != 1 || h.Clock.NSMTimeUnixMilli == 0 || h.Clock.MaxSkewNanos != int64(DefaultMaxClockSkew)) {
				t.Fatalf("clock %+v", h.Clock)
			}
			var old oldHealth
			err := protocol.Unmarshal(r.Body, &old)
			if !tt.wantClock && (err != nil || len(old.Checks) != 5) {
				t.Fatalf("an older client cannot decode the response: %v", err)
			}
			if tt.wantClock && err == nil {
				t.Fatal("an older client decoded key 8: then the gate is not needed; update this test")
			}
		})
	}
	// A newer client decodes an older server's response: no clock.
	var h protocol.HealthResponse
	if err := protocol.Unmarshal(mustMarshal(&oldHealth{Version: "v0", Checks: []oldCheckResult{{Name: "rng", OK: true}}}), &h); err != nil || h.Clock != nil {
		t.Fatalf("older server's response: %+v, %v", h, err)
	}
}

// A TrustedClock follows the NSM reading on the monotonic clock and refuses
// readings past its maximum age (none when it is zero).
func TestTrustedClockAge(t *testing.T) {
	for _, tt := range []struct {
		name   string
		maxAge time.Duration
		wait   time.Duration
		stale  bool
	}{
		{"fresh", time.Minute, 30 * time.Second, false},
		{"at the limit", time.Minute, time.Minute, false},
		{"past the limit", time.Minute, time.Minute + time.Nanosecond, true},
		{"no limit", 0, 1000 * time.Hour, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := NewTrustedClock(tt.maxAge)
				nsmTime := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
				c.Record(ClockReading{NSMTime: nsmTime, Skew: time.Since(nsmTime), At: time.Now()})
				time.Sleep(tt.wait)
				now, err := c.Now()
				if tt.stale {
					if !errors.Is(err, ErrNoTrustedTime) {
						t.Fatalf("Now = %v, %v; want ErrNoTrustedTime", now, err)
					}
					return
				}
				if err != nil || !now.Equal(nsmTime.Add(tt.wait)) {
					t.Fatalf("Now = %v, %v; want %v", now, err, nsmTime.Add(tt.wait))
				}
			})
		})
	}
}
