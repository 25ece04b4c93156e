package enclave_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// A minimal server with one method, and one call to it. Inside an enclave,
// leave Addr and SysFS unset (vsock://any:5000 and the real /sys) and use
// attest.OpenDefaultNSM (/dev/nsm) as the Attester.
func ExampleServer() {
	// An emulated NSM with non-zero PCRs and the system's time, so that the
	// NSM checks pass too (an all-zero PCR0 would be a debug-mode enclave).
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		fmt.Println(err)
		return
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nsm.Close()
	srv, err := enclave.New(enclave.Config{
		Attester: nsm,
		Addr:     "tcp://127.0.0.1:0",
		// Fake the sysfs files a Nitro Enclave has, so the startup checks
		// pass on a development machine without --dev.
		SysFS: fstest.MapFS{
			"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
			"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv.Handle("upper", func(ctx context.Context, body []byte) ([]byte, error) {
		return []byte(strings.ToUpper(string(body))), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Listen(ctx); err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	// The parent side: one frame out, one frame back.
	conn, err := transport.Dial(ctx, transport.AddrOf(srv.Addr()))
	if err != nil {
		fmt.Println(err)
		return
	}
	req, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: "upper", Body: []byte("hello, enclave")})
	_ = protocol.WriteFrame(conn, req, 0)
	payload, _ := protocol.ReadFrame(conn, nil, 0)
	resp, _ := protocol.UnmarshalEnvelope(payload)
	fmt.Printf("id %d: %s\n", resp.ID, resp.Body)
	conn.Close()

	cancel() // graceful shutdown
	fmt.Println("serve:", <-served)
	// Output:
	// id 1: HELLO, ENCLAVE
	// serve: <nil>
}

// The startup checks fail closed outside a Nitro Enclave.
func ExampleRunChecks() {
	sys := fstest.MapFS{
		"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("virtio_rng.0\n")},
		"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
	}
	_, err := enclave.RunChecks(sys, enclave.StartupChecks(), false, slog.New(slog.DiscardHandler))
	fmt.Println(err)
	// Output:
	// enclave: refusing to start: startup check "rng" failed: /sys/devices/virtual/misc/hw_random/rng_current contains "virtio_rng.0", required "nsm-hwrng" (run inside a Nitro Enclave; for development only, pass --dev / set Config.Dev to downgrade this to a warning)
}

// Code that needs trusted time (attestation freshness, certificate
// validity) asks the server's TrustedClock instead of the system clock.
// Here the emulated NSM's time runs 2 s ahead of the system clock: within
// the default 5 s bound, so the server starts, and the TrustedClock follows
// the NSM.
func ExampleServer_TrustedClock() {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs(), ClockOffset: 2 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nsm.Close()
	srv, err := enclave.New(enclave.Config{
		Addr: "tcp://127.0.0.1:0",
		SysFS: fstest.MapFS{
			"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
			"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
		},
		Attester: nsm,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Listen(ctx); err != nil { // runs the NSM checks
		fmt.Println(err)
		return
	}
	go srv.Serve(ctx) // re-checks the clock every minute

	now, err := srv.TrustedClock().Now()
	if err != nil {
		fmt.Println(err) // no recent NSM reading: fail closed
		return
	}
	fmt.Println("NSM time minus system time:", time.Until(now).Round(time.Second))
	fmt.Println("measured skew:", srv.Stats().ClockSkew.Round(time.Second))
	// Use it wherever a verifier takes the current time, e.g.
	// attest.VerifyOptions{CurrentTime: now, MaxAge: 5 * time.Minute}.

	// Output:
	// NSM time minus system time: 2s
	// measured skew: -2s
}
