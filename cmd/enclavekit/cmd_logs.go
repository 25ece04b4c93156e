package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/transport"
)

func runLogs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: enclavekit logs [--listen ADDR] [--json] [--enclave NAME] [--allow-cids 16,17]\n\n"+
			"Receives the log records enclaves stream to the parent and prints them to\n"+
			"standard output with an enclave attribute. Runs until interrupted.\n\nflags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", logsink.DefaultListen, "address the enclaves connect to")
	asJSON := fs.Bool("json", false, "print JSON lines instead of text")
	name := fs.String("enclave", "", "value of the enclave attribute (default: the sender's CID or IP)")
	level := fs.String("level", "debug", "lowest level printed: debug, info, warn or error")
	metrics := fs.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. tcp://127.0.0.1:9102 (default: none)")
	allow := fs.String("allow-cids", "", "comma-separated enclave CIDs whose streams are accepted (default: every enclave CID, 4 and up; never the parent's 3)")
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
	var cids []uint32
	for _, f := range strings.Split(*allow, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			fmt.Fprintf(stderr, "enclavekit logs: --allow-cids: %q is not a CID; give numbers such as 16,17\n", f)
			return exitUsage
		}
		if n < 4 || n == uint64(transport.CIDAny) {
			fmt.Fprintf(stderr, "enclavekit logs: --allow-cids: %d is not an enclave CID (3 is the parent itself, 0..2 are reserved); give enclave CIDs, 4 and up, such as 16,17\n", n)
			return exitUsage
		}
		cids = append(cids, uint32(n))
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(stdout, opts)
	if *asJSON {
		h = slog.NewJSONHandler(stdout, opts)
	}
	sink, err := logsink.New(logsink.Config{Listen: *listen, Handler: h, Enclave: *name, AllowCIDs: cids})
	if err != nil {
		return usageFail(fs, stderr, "enclavekit logs: %s", libErr(err, logsFlagNames))
	}
	ln, err := transport.Listen(ctx, *listen)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit logs: %s\n", withHint(err))
		return exitFailure
	}
	fmt.Fprintf(stderr, "enclavekit logs: listening on %s\n", transport.AddrOf(ln.Addr()))
	maddr, err := startMetrics(ctx, *metrics, slog.New(slog.NewTextHandler(stderr, nil)), sink.Collectors(nil)...)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "enclavekit logs: %v\n", err)
		return exitFailure
	}
	if maddr != "" {
		fmt.Fprintf(stderr, "enclavekit logs: metrics at %s/metrics\n", maddr)
	}
	if err := sink.Serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "enclavekit logs: %v\n", err)
		return exitFailure
	}
	return exitOK
}
