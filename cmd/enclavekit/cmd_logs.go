package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/transport"
)

func init() {
	register(command{
		name:    "logs",
		summary: "receive an enclave's log stream and print it",
		run:     runLogs,
	})
}

func runLogs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: enclavekit logs [--listen ADDR] [--json] [--enclave NAME]\n\n"+
			"Receives the log records enclaves stream to the parent and prints them to\n"+
			"standard output with an enclave attribute. Runs until interrupted.\n\nflags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", parent.DefaultLogSinkListen, "address the enclaves connect to")
	asJSON := fs.Bool("json", false, "print JSON lines instead of text")
	name := fs.String("enclave", "", "value of the enclave attribute (default: the sender's CID or IP)")
	level := fs.String("level", "debug", "lowest level printed: debug, info, warn or error")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	var lv slog.Level
	switch {
	case len(pos) != 0:
		return usageFail(fs, stderr, "enclavekit logs: unexpected arguments %q; logs takes only flags", pos)
	case lv.UnmarshalText([]byte(*level)) != nil:
		return usageFail(fs, stderr, "enclavekit logs: --level %q: want debug, info, warn or error", *level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(stdout, opts)
	if *asJSON {
		h = slog.NewJSONHandler(stdout, opts)
	}
	sink, err := parent.NewLogSink(parent.LogSinkConfig{Listen: *listen, Handler: h, Enclave: *name})
	if err != nil {
		return usageFail(fs, stderr, "enclavekit logs: %v", err)
	}
	ln, err := transport.Listen(ctx, *listen)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit logs: %s\n", withHint(err))
		return exitFailure
	}
	fmt.Fprintf(stderr, "enclavekit logs: listening on %s\n", transport.AddrOf(ln.Addr()))
	if err := sink.Serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "enclavekit logs: %v\n", err)
		return exitFailure
	}
	return exitOK
}
