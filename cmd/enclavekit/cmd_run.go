package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/enclavekit/enclavekit/parent/supervisor"
)

// runRun: enclavekit run --config FILE [--slot N] [--check]
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "YAML configuration `file` (enclaves, egress, health, restart)")
	slot := fs.Int("slot", -1, "supervisor slot 0..15 on this instance (moves CIDs and parent vsock ports); default: the file's")
	check := fs.Bool("check", false, "check the configuration, print the CIDs and ports assigned, and exit")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log lines as text or json")
	asJSON := fs.Bool("log-json", false, "log JSON lines instead of text")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: enclavekit run --config FILE [--slot N] [--check]\n\n"+
			"Starts each enclave of FILE with nitro-cli, beside it its log sink and ingress and the\n"+
			"egress routes; restarts an enclave that crashes or stops answering; serves /healthz,\n"+
			"/readyz and /metrics. SIGTERM drains the ingress, then terminates the enclaves.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlagSet(fs, args); err != nil {
		return flagExit(err)
	}
	switch {
	case *config == "":
		return usageFail(fs, stderr, "enclavekit run: --config is required: the run.yaml that lists the enclaves (docs/operations.md shows one)")
	case fs.NArg() != 0:
		return usageFail(fs, stderr, "enclavekit run: unexpected arguments %q; the file goes in --config", fs.Args())
	}
	lv, err := logLevel(*level)
	if err != nil {
		return usageFail(fs, stderr, "enclavekit run: %v", err)
	}
	var lo supervisor.LoadOptions
	if *slot >= 0 {
		lo.Slot = slot
	}
	cfg, err := supervisor.LoadConfigWith(*config, lo)
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit run:", err)
		return exitFailure
	}
	if *check {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Slot     int                     `json:"slot"`
			Enclaves []supervisor.Assignment `json:"enclaves"`
			Egress   []string                `json:"egress_routes"`
			HTTP     string                  `json:"http"`
		}{cfg.Slot, cfg.Assignments(), cfg.EgressListens(), cfg.HTTP})
		return exitOK
	}
	for _, e := range cfg.Enclaves {
		if e.Debug {
			fmt.Fprintf(stderr, "enclavekit run: WARNING: enclave %q runs in DEBUG MODE (debug: true in %s): all-zero PCRs, console readable from the parent; never in production\n", e.Name, *config)
		}
	}
	if *asJSON {
		*logFormat = "json" // --json is the older spelling
	}
	log, err := daemonLogger(stderr, *logFormat, lv)
	if err != nil {
		return usageFail(fs, stderr, "enclavekit run: %v", err)
	}
	s, err := supervisor.New(cfg, supervisor.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit run:", err)
		return exitFailure
	}
	if err := s.Listen(ctx); err != nil {
		fmt.Fprintln(stderr, "enclavekit run:", withHint(err))
		return exitFailure
	}
	log.Info("enclavekit run: serving /healthz, /readyz, /metrics", "addr", s.HTTPAddr())
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, "enclavekit run:", err)
		return exitFailure
	}
	return exitOK
}
