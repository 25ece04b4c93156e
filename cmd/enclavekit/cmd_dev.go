package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/enclavekit/enclavekit/internal/devharness"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("enclavekit dev", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintln(stderr, `usage: enclavekit dev [--keep] [--verbose] [--kill COMPONENT]

Starts on loopback TCP the enclave server (enclaved --dev --nsm emulated),
the parent log sink, the egress proxy and an HTTPS test server, then runs
health, attestation, echo, egress and logs steps. Exits 0 only if every
step passed.`)
		fl.PrintDefaults()
	}
	keep := fl.Bool("keep", false, "keep everything running after the session and print ready-to-paste commands; Ctrl-C stops")
	verbose := fl.Bool("verbose", false, "also print the enclave's console, the sink's records and the proxy's log")
	kill := fl.String("kill", "", "stop this component before the step that needs it, to see the failure path: "+strings.Join(devharness.Components, ", "))
	timeout := fl.Duration("step-timeout", 20*time.Second, "time limit of each step")
	if err := parseFlagSet(fl, args); err != nil {
		return flagExit(err)
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "enclavekit dev: unexpected arguments %q\n", fl.Args())
		return exitUsage
	}
	opts := devharness.Options{Out: stdout, Keep: *keep, Verbose: *verbose, Kill: *kill, StepTimeout: *timeout}
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(stderr, "enclavekit dev:", err)
		return exitUsage
	}
	if err := devharness.Run(ctx, opts); err != nil {
		var se *devharness.StepError
		if !errors.As(err, &se) {
			fmt.Fprintln(stderr, "enclavekit dev:", err)
		}
		return exitFailure
	}
	return exitOK
}
