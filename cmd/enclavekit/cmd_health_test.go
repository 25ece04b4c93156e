package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// "enclavekit health" shows every check with its value, and the clock as
// measured against the NSM; "call enclavekit.health" with no body gets the
// response every older client decodes, without the clock.
func TestHealthCLIShowsEveryCheck(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs(), ClockOffset: -1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer nsm.Close()
	srv, err := enclave.New(enclave.Config{
		Addr: "tcp://127.0.0.1:0",
		SysFS: fstest.MapFS{
			"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
			"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
		},
		Attester:     nsm,
		Logger:       slog.New(slog.DiscardHandler),
		DrainTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	addr := transport.AddrOf(srv.Addr())

	code, out, errOut := callCLI("health", "--addr", addr)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var h protocol.HealthResponse
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	want := map[string]string{"rng": "nsm-hwrng", "clocksource": "kvm-clock", "nsm": "answered in", "debug": "1925f99baf2f", "clock": "ahead of the NSM"}
	if len(h.Checks) != len(want) {
		t.Fatalf("%d checks, want %d:\n%s", len(h.Checks), len(want), out)
	}
	for _, c := range h.Checks {
		if !c.OK || !strings.Contains(c.Found, want[c.Name]) {
			t.Errorf("check %+v; want ok, found mentioning %q", c, want[c.Name])
		}
	}
	if h.Clock == nil || h.Clock.Checks != 1 || h.Clock.MaxSkewNanos != int64(5*time.Second) ||
		(time.Duration(h.Clock.SkewNanos)-1500*time.Millisecond).Abs() > 250*time.Millisecond {
		t.Fatalf("clock %+v; want one reading, skew about +1.5s:\n%s", h.Clock, out)
	}
	for _, key := range []string{`"clock": {`, `"skew_ns": `, `"name": "debug"`} {
		if !strings.Contains(out, key) {
			t.Errorf("output lacks %s:\n%s", key, out)
		}
	}

	code, out, errOut = callCLI("call", "--addr", addr, protocol.MethodHealth)
	if code != exitOK || strings.Contains(out, `"clock": {`) || !strings.Contains(out, `"name": "clock"`) {
		t.Fatalf("call without a body: exit %d, stderr %q, output:\n%s", code, errOut, out)
	}
}
