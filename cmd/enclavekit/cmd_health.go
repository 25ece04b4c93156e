package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: enclavekit health --addr ADDR [--timeout D]\n\nExit status: 0 ok, 1 the call failed, 2 usage.\n\nflags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "", "enclave server address, e.g. vsock://16:5000 or tcp://127.0.0.1:5000 (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the whole call, connection included")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case *addr == "":
		return usageFail(fs, stderr, "enclavekit health: --addr is required: the enclave's address, such as vsock://16:5000 or tcp://127.0.0.1:5000")
	case len(pos) != 0:
		return usageFail(fs, stderr, "enclavekit health: unexpected arguments %q; the address goes in --addr", pos)
	case *timeout <= 0:
		return usageFail(fs, stderr, "enclavekit health: --timeout %v: want a positive duration such as 10s", *timeout)
	}
	// Ask for the clock too; servers that predate it ignore the request.
	req, err := protocol.Marshal(&protocol.HealthRequest{Clock: true})
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit health: %v\n", err)
		return exitFailure
	}
	out, code := callOnce(ctx, stderr, "health", *addr, *timeout, protocol.MethodHealth, req)
	if code != exitOK {
		return code
	}
	js, err := callResponseJSON(protocol.MethodHealth, out)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit health: response: %v\n", err)
		return exitFailure
	}
	stdout.Write(js)
	return exitOK
}
