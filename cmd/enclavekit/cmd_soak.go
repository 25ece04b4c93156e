package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/enclavekit/enclavekit/internal/soak"
)

func runSoak(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("enclavekit soak", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintln(stderr, `usage: enclavekit soak [--duration D] [flags]

Runs, on loopback, an enclave server, a parent client, the egress proxy and a
hashing sink, and for --duration drives echo calls (every byte checked),
proxied streams (SHA-256 checked at both ends) and stalled slowloris
connections at once, every server limit at its default. Then three attack
phases of --duration/2 each, a good client making 64-byte calls throughout:
slowloris connections held against the server, trickling connections held
against an ingress, and connections pipelining 1 MiB requests without
reading. Prints progress, then a report; exits 1 if a call failed, a proxied
byte was lost or corrupted, a slowloris connection was cut without being
counted as evicted or timed out, a good call failed or its p99 reached
--good-p99, goroutines leaked or memory grew. See docs/soak.md.`)
		fl.PrintDefaults()
	}
	var o soak.Options
	fl.DurationVar(&o.Duration, "duration", 60*time.Second, "how long the loads run")
	fl.IntVar(&o.Concurrency, "concurrency", soak.DefaultConcurrency, fmt.Sprintf("goroutines making echo calls (1..%d)", soak.MaxConcurrency))
	fl.IntVar(&o.PoolSize, "pool", soak.DefaultPoolSize, "connections of the shared parent client (1..64)")
	fl.IntVar(&o.MaxBody, "max-body", soak.DefaultMaxBody, "largest echo body in bytes")
	fl.IntVar(&o.Streams, "streams", soak.DefaultStreams, "proxied streams open at once")
	fl.Int64Var(&o.MaxStreamBytes, "max-stream-bytes", soak.DefaultMaxStreamBytes, "largest payload of one proxied stream in bytes")
	fl.IntVar(&o.Slowloris, "slowloris", soak.DefaultSlowloris, "stalled connections held open to the enclave server (lowered if the open-file limit is too low)")
	fl.IntVar(&o.Tricklers, "tricklers", soak.DefaultTricklers, "trickling connections held against the ingress in the ingress phase")
	fl.IntVar(&o.Pipeliners, "pipeliners", soak.DefaultPipeliners, "connections pipelining 1 MiB requests without reading in the pipeliners phase")
	fl.DurationVar(&o.GoodP99, "good-p99", soak.DefaultGoodP99, "largest acceptable p99 of the good client's calls in each attack phase")
	fl.DurationVar(&o.ProgressEvery, "progress", soak.DefaultProgressEvery, "interval of progress lines")
	fl.Uint64Var(&o.Seed, "seed", 0, "seed of the random bodies and payloads (0: random)")
	verbose := fl.Bool("verbose", false, "print the components' logs at info level (default: warnings and errors)")
	if err := parseFlagSet(fl, args); err != nil {
		return flagExit(err)
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "enclavekit soak: unexpected arguments %q\n", fl.Args())
		return exitUsage
	}
	// Flags that were given as 0 would silently take the defaults; refuse
	// them instead.
	bad := ""
	fl.Visit(func(f *flag.Flag) {
		if f.Value.String() == "0" || f.Value.String() == "0s" {
			if f.Name != "seed" && bad == "" {
				bad = f.Name
			}
		}
	})
	if bad != "" {
		fmt.Fprintf(stderr, "enclavekit soak: --%s must be positive\n", bad)
		return exitUsage
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "enclavekit soak:", err)
		return exitUsage
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	o.Out = stdout
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	rep, err := soak.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit soak:", err)
		return exitFailure
	}
	rep.WriteTo(stdout)
	if !rep.OK() {
		return exitFailure
	}
	return exitOK
}
