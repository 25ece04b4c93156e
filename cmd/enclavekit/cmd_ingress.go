package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/transport"
)

func runIngress(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit ingress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: enclavekit ingress --listen ADDR --to ADDR [flags]\n\n"+
			"Accepts TCP connections on --listen (e.g. tcp://0.0.0.0:443) and forwards each,\n"+
			"byte for byte, to --to in the enclave (e.g. vsock://16:443). Runs until interrupted.\n\nflags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "", "address to accept clients on, e.g. tcp://0.0.0.0:443 (required)")
	to := fs.String("to", "", "enclave address to forward to, e.g. vsock://16:443 (required)")
	maxConns := fs.Int("max-conns", ingress.DefaultMaxConns, "connections forwarded at once; a newcomer at the cap evicts the connection idle or stalled the longest")
	perSource := fs.Int("max-conns-per-source", ingress.DefaultMaxConnsPerSource, "connections of one source address (IPv4, or IPv6 /64); beyond it the source's own connection idle for --min-rate-grace is evicted, else the newcomer is refused (negative: no cap)")
	minRate := fs.Int64("min-rate", ingress.DefaultMinRate, "bytes per second a client must send while a TLS record or frame is incomplete, after --min-rate-grace (negative: no check)")
	minRateGrace := fs.Duration("min-rate-grace", ingress.DefaultMinRateGrace, "time a message may take before --min-rate applies")
	framing := fs.String("framing", ingress.FramingAuto, "message boundaries for --min-rate: auto, tls, frames or none")
	idle := fs.Duration("idle-timeout", ingress.DefaultIdleTimeout, "close connections idle this long in both directions (0 or negative: never)")
	proxy := fs.Bool("proxy-protocol", false, "send a PROXY protocol v2 header with the client's address first")
	metrics := fs.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. tcp://127.0.0.1:9101 (default: none)")
	logFormat := fs.String("log-format", "text", "log lines as text or json")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case *to == "":
		return usageFail(fs, stderr, "enclavekit ingress: --to is required: the enclave's address, such as vsock://16:5000")
	case *listen == "":
		return usageFail(fs, stderr, "enclavekit ingress: --listen is empty: give the address outside clients connect to, such as tcp://0.0.0.0:443")
	case len(pos) != 0:
		return usageFail(fs, stderr, "enclavekit ingress: unexpected arguments %q; ingress takes only flags", pos)
	case *maxConns < 1:
		return usageFail(fs, stderr, "enclavekit ingress: --max-conns %d: want 1 or more", *maxConns)
	}
	switch *framing {
	case ingress.FramingAuto, ingress.FramingTLS, ingress.FramingFrames, ingress.FramingNone:
	default:
		fmt.Fprintf(stderr, "enclavekit ingress: --framing %q: want auto, tls, frames or none\n", *framing)
		return exitUsage
	}
	if *idle == 0 {
		*idle = -1 // 0 on the command line means never, as negative does
	}
	log, err := daemonLogger(stderr, *logFormat, slog.LevelInfo)
	if err != nil {
		return usageFail(fs, stderr, "enclavekit ingress: %v", err)
	}
	in, err := ingress.New(ingress.Config{
		Listen:        *listen, // validated here: a malformed address is a usage error
		Target:        *to,
		MaxConns:      *maxConns,
		IdleTimeout:   *idle,
		ProxyProtocol: *proxy,
		Logger:        log,

		MaxConnsPerSource: *perSource,
		MinRate:           *minRate,
		MinRateGrace:      *minRateGrace,
		Framing:           *framing,
	})
	if err != nil {
		return usageFail(fs, stderr, "enclavekit ingress: %s", libErr(err, ingressFlagNames))
	}
	ln, err := transport.Listen(ctx, *listen)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit ingress: %s\n", withHint(err))
		return exitFailure
	}
	maddr, err := startMetrics(ctx, *metrics, log, in.Collectors(nil)...)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "enclavekit ingress: %v\n", err)
		return exitFailure
	}
	if maddr != "" {
		log.Info("enclavekit ingress: metrics", "addr", maddr+"/metrics")
	}
	log.Info("enclavekit ingress: forwarding", "listen", transport.AddrOf(ln.Addr()), "to", *to,
		"max_conns", *maxConns, "max_conns_per_source", *perSource, "min_rate", *minRate, "idle_timeout", time.Duration(max(*idle, 0)), "proxy_protocol", *proxy)
	if err := in.Serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "enclavekit ingress: %v\n", err)
		return exitFailure
	}
	return exitOK
}
