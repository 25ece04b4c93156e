// Command greeter-enclave is an enclave server with one method, "greet".
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/protocol"
)

// GreetRequest and GreetResponse are the method's CBOR bodies. Integer keys
// (keyasint) keep them small; the parent uses the same definitions.
type GreetRequest struct {
	Name string `cbor:"1,keyasint"`
}

type GreetResponse struct {
	Greeting string `cbor:"1,keyasint"`
}

func main() {
	listen := flag.String("listen", enclave.DefaultAddr, "listen address")
	logSink := flag.String("log-sink", enclave.DefaultLogSinkAddr, "parent log sink address")
	dev := flag.Bool("dev", false, "development: startup checks warn, NSM emulated")
	rootOut := flag.String("emulator-root", "", "with -dev: write the NSM emulator's root certificate (PEM) to this file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// Logs go to the console and, without blocking, to the parent's sink.
	logs, err := enclave.NewLogHandler(enclave.LogConfig{Addr: *logSink})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		logs.Close(cctx)
	}()
	log := slog.New(logs)

	att, err := openAttester(*dev, *rootOut)
	if err != nil {
		log.Error("attester", "err", err)
		os.Exit(1)
	}

	srv, err := enclave.New(enclave.Config{Addr: *listen, Dev: *dev, Logger: log, Attester: att})
	if err != nil {
		log.Error("refusing to start", "err", err)
		os.Exit(1)
	}
	srv.Handle("greet", func(ctx context.Context, body []byte) ([]byte, error) {
		var req GreetRequest
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %w", protocol.ErrBadRequest, err)
		}
		if req.Name == "" {
			return nil, fmt.Errorf("%w: empty name", protocol.ErrBadRequest)
		}
		return protocol.Marshal(GreetResponse{Greeting: "hello, " + req.Name})
	})
	if err := srv.Serve(ctx); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// openAttester opens /dev/nsm, or in development an NSM emulator whose
// root certificate is written to rootOut. The emulator reports the fixed,
// non-zero development PCRs (nsmtest.DevPCRs): all-zero PCRs are what a
// debug-mode enclave reports, which the startup checks and the parent
// refuse.
func openAttester(dev bool, rootOut string) (*attest.NSM, error) {
	if !dev {
		return attest.OpenDefaultNSM()
	}
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		return nil, err
	}
	if rootOut != "" {
		if err := os.WriteFile(rootOut, emu.RootPEM(), 0o644); err != nil {
			return nil, err
		}
	}
	return attest.OpenNSM(emu.Options())
}
