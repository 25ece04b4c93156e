package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/enclavekit/enclavekit/parent/proxy"
)

func proxyLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	l, err := logLevel(level)
	if err != nil {
		return nil, err
	}
	return daemonLogger(w, format, l)
}

// runProxy: enclavekit proxy --config FILE
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "YAML configuration `file` (routes, allowlist, limits, metrics)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log lines as text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: enclavekit proxy --config FILE\n\nRuns the egress proxy. SIGHUP reloads the allowlist from FILE; SIGTERM drains and exits.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlagSet(fs, args); err != nil {
		return flagExit(err)
	}
	switch {
	case *config == "":
		return usageFail(fs, stderr, "enclavekit proxy: --config is required: the routes and allowlist file, such as /etc/enclavekit/proxy.yaml (deploy/config/proxy.yaml is a template)")
	case fs.NArg() != 0:
		return usageFail(fs, stderr, "enclavekit proxy: unexpected arguments %q; for vsock-proxy's LOCAL_PORT REMOTE_HOST REMOTE_PORT use enclavekit vsock-proxy", fs.Args())
	}
	log, err := proxyLogger(stderr, *level, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit proxy:", err)
		return exitUsage
	}
	cfg, err := proxy.LoadConfig(*config)
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit proxy:", err)
		return exitFailure
	}
	return serveProxy(ctx, cfg, *config, log, stderr)
}

// runVsockProxy: enclavekit vsock-proxy [--config FILE] [-4|-6] [-w N] LOCAL_PORT REMOTE_HOST REMOTE_PORT
func runVsockProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit vsock-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", proxy.DefaultAllowlistFile, "YAML allowlist `file` (AWS vsock-proxy format, or an enclavekit proxy config)")
	ipv4 := fs.Bool("ipv4", false, "use IPv4 addresses only")
	ipv6 := fs.Bool("ipv6", false, "use IPv6 addresses only")
	workers := fs.Int("num_workers", 0, "maximum simultaneous connections (default: the config's limits.max_conns, else 4096)")
	listen := fs.String("listen", "", "listen on this transport `address` instead of vsock://any:LOCAL_PORT (e.g. tcp://127.0.0.1:8000 for local tests)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log lines as text or json")
	fs.BoolVar(ipv4, "4", false, "short for --ipv4")
	fs.BoolVar(ipv6, "6", false, "short for --ipv6")
	fs.IntVar(workers, "w", 0, "short for --num_workers")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: enclavekit vsock-proxy [--config FILE] [-4|-6] [-w N] LOCAL_PORT REMOTE_HOST REMOTE_PORT\n\nForwards vsock port LOCAL_PORT to REMOTE_HOST:REMOTE_PORT, which must be on the allowlist\n(default file "+proxy.DefaultAllowlistFile+"), like AWS vsock-proxy.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlagSet(fs, args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 3 {
		return usageFail(fs, stderr, "enclavekit vsock-proxy: want LOCAL_PORT REMOTE_HOST REMOTE_PORT, got %d arguments", fs.NArg())
	}
	usageErr := func(format string, a ...any) int {
		return usageFail(fs, stderr, "enclavekit vsock-proxy: "+format, a...)
	}
	localPort, err := strconv.ParseUint(fs.Arg(0), 10, 32)
	if err != nil {
		return usageErr("LOCAL_PORT %q is not a vsock port number", fs.Arg(0))
	}
	remotePort, err := strconv.ParseUint(fs.Arg(2), 10, 16)
	if err != nil || remotePort == 0 {
		return usageErr("REMOTE_PORT %q is not a number in 1..65535", fs.Arg(2))
	}
	if *ipv4 && *ipv6 {
		return usageErr("-4 and -6 exclude each other")
	}
	if *workers < 0 {
		return usageErr("--num_workers must be positive")
	}
	log, err := proxyLogger(stderr, *level, *logFormat)
	if err != nil {
		return usageErr("%v", err)
	}
	cfg, err := proxy.LoadConfig(*config)
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit vsock-proxy:", err)
		return exitFailure
	}
	addr := *listen
	if addr == "" {
		addr = "vsock://any:" + strconv.FormatUint(localPort, 10)
	}
	cfg.Routes = append(cfg.Routes, proxy.Route{
		Name:   "vsock-proxy:" + strconv.FormatUint(localPort, 10),
		Listen: addr,
		To:     net.JoinHostPort(fs.Arg(1), strconv.FormatUint(remotePort, 10)),
	})
	switch {
	case *ipv4:
		cfg.Network = "tcp4"
	case *ipv6:
		cfg.Network = "tcp6"
	}
	if *workers > 0 {
		cfg.Limits.MaxConns = *workers
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "enclavekit vsock-proxy: %v (allowlist file %s)\n", err, *config)
		return exitFailure
	}
	return serveProxy(ctx, cfg, *config, log, stderr)
}

// serveProxy runs the proxy until ctx is done (SIGTERM, SIGINT), reloading
// the allowlist from path on SIGHUP.
func serveProxy(ctx context.Context, cfg proxy.Config, path string, log *slog.Logger, stderr io.Writer) int {
	p, err := proxy.New(cfg, proxy.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "enclavekit proxy:", err)
		return exitFailure
	}
	// Catch SIGHUP before anything can observe the listeners, so that a
	// reload request never kills the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := p.Listen(ctx); err != nil {
		fmt.Fprintln(stderr, "enclavekit proxy:", withHint(err))
		return exitFailure
	}
	if a := p.MetricsAddr(); a != "" {
		log.Info("metrics", "addr", a+"/metrics")
	}

	reloaderDone := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		<-reloaderDone
	}()
	go func() {
		defer close(reloaderDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				next, err := proxy.LoadConfig(path)
				if err == nil {
					err = p.Reload(next)
				}
				if err != nil {
					log.Error("reload failed; keeping the current allowlist", "file", path, "err", err)
				}
			}
		}
	}()

	if err := p.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, "enclavekit proxy:", err)
		return exitFailure
	}
	return exitOK
}
