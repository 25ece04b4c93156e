package enclaved

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Exit codes of Run.
const (
	exitOK      = 0
	exitFailure = 1 // refused to start (startup check, listen, NSM) or failed while serving
	exitUsage   = 2 // bad flags
)

// methodEcho returns its request body; for tests and smoke checks.
const methodEcho = "echo"

// options are the parsed flags.
type options struct {
	cfg      enclave.Config
	nsm      string
	logSink  string
	logLevel slog.Level
	kms      kmsOptions
	version  bool
	logJSON  bool
	tls      tlsOptions // --tls-listen, --emulator-root (atls.go)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fl := flag.NewFlagSet("enclaved", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.cfg.Addr, "listen", enclave.DefaultAddr, "listen `address`: vsock://any:PORT in an enclave, tcp://HOST:PORT for development")
	fl.BoolVar(&o.cfg.Dev, "dev", false, "development override: failed startup checks become warnings and health reports dev=true (never in production)")
	fl.StringVar(&o.nsm, "nsm", nsmDevice, "attester: device (/dev/nsm) or emulated (in-memory NSM emulator; needs --dev)")
	fl.StringVar(&o.logSink, "log-sink", enclave.DefaultLogSinkAddr, "parent log sink `address`, or none; logs always go to stderr too")
	fl.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "minimum log `level`: debug, info, warn, error")
	fl.IntVar(&o.cfg.MaxConns, "max-conns", enclave.DefaultMaxConns, "maximum open connections; more are closed at once")
	fl.IntVar(&o.cfg.MaxInFlight, "max-in-flight", enclave.DefaultMaxInFlight, "maximum requests in flight per connection")
	fl.IntVar(&o.cfg.MaxFrameSize, "max-frame-size", protocol.DefaultMaxFrameSize, "maximum frame payload in `bytes` (up to 64 MiB)")
	fl.Int64Var(&o.cfg.MaxInFlightBytes, "max-in-flight-bytes", enclave.DefaultMaxInFlightBytes, "maximum `bytes` of requests in flight across all connections (at least --max-frame-size)")
	fl.DurationVar(&o.cfg.ReadFrameTimeout, "read-header-timeout", enclave.DefaultReadFrameTimeout, "time to receive a whole frame once its first byte arrives")
	fl.DurationVar(&o.cfg.IdleTimeout, "idle-timeout", enclave.DefaultIdleTimeout, "time to wait for the next request on a connection")
	fl.DurationVar(&o.cfg.WriteTimeout, "write-timeout", enclave.DefaultWriteTimeout, "time to write one response")
	fl.DurationVar(&o.cfg.HandlerTimeout, "handler-timeout", enclave.DefaultHandlerTimeout, "time a handler may take")
	fl.DurationVar(&o.cfg.DrainTimeout, "drain-timeout", enclave.DefaultDrainTimeout, "on SIGTERM, time in-flight requests get to finish")
	o.kms.flags(fl)
	fl.BoolVar(&o.version, "version", false, "print the version and exit")
	fl.Func("log-format", "console log lines as `text` or json", func(v string) error {
		switch v {
		case "text", "json":
			o.logJSON = v == "json"
			return nil
		}
		return fmt.Errorf("want text or json")
	})
	fl.BoolVar(&o.cfg.AllowDebug, "allow-debug", false, "start even if the NSM reports an all-zero PCR0 (a debug-mode enclave, which the parent can read), with a loud warning")
	fl.DurationVar(&o.cfg.MaxClockSkew, "max-clock-skew", enclave.DefaultMaxClockSkew, "largest difference allowed between the system clock and the NSM's time")
	fl.DurationVar(&o.cfg.ClockCheckInterval, "clock-check-interval", enclave.DefaultClockCheckInterval, "time between re-checks of the clock against the NSM while serving")
	fl.DurationVar(&o.cfg.NSMTimeout, "nsm-timeout", enclave.DefaultNSMTimeout, "time the NSM gets to answer each attestation request of the startup and clock checks")
	o.tls.flags(fl)
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: enclaved takes only flags", fl.Args())
	}
	if o.version {
		return o, nil
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, flagError(err)
	}
	if o.nsm != nsmDevice && o.nsm != nsmEmulated {
		return nil, fmt.Errorf("--nsm %q: want %s or %s", o.nsm, nsmDevice, nsmEmulated)
	}
	if o.nsm == nsmEmulated && !emulatorBuilt {
		return nil, errors.New("--nsm emulated: " + errNoEmulator)
	}
	if err := o.kms.check(); err != nil {
		return nil, err
	}
	if o.nsm == nsmEmulated && !o.cfg.Dev {
		return nil, errors.New("--nsm emulated produces attestation documents no verifier trusts; it needs --dev")
	}
	if err := o.tls.validate(o); err != nil {
		return nil, err
	}
	return o, nil
}

// Env is what Run gets from its surroundings instead of the process.
type Env struct {
	// Stdout and Stderr receive the program's output (required).
	Stdout, Stderr io.Writer
	// SysFS replaces the real root file system for the startup checks.
	SysFS fs.FS
	// Emulator, when set, backs --nsm emulated instead of a fresh emulator
	// (an *nsmtest.Emulator), so that a harness in the same process can
	// verify the documents against its root and set its PCRs. The
	// production build refuses --nsm emulated whatever this holds.
	Emulator NSMEmulator
	// Handlers, when set, returns methods to register beside echo (e.g. the
	// harness's egress probe); it gets the server's logger, whose records
	// stream to the parent log sink. It is called once per server: twice
	// with --tls-listen.
	Handlers func(log *slog.Logger) map[string]enclave.Handler
	// Ready, when set, is called with the listen address once listening.
	Ready func(addr string)
	// TLSReady, when set, is called with the --tls-listen address once
	// listening, before Ready.
	TLSReady func(addr string)
}

// Run is enclaved's main without the process: it parses args, runs until
// ctx is done (SIGTERM in the binary) and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	stdout, stderr, sysfs := env.Stdout, env.Stderr, env.SysFS
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitUsage
	}
	if o.version {
		fmt.Fprintf(stdout, "enclaved %s (%s)\n", enclave.BuildVersion(), runtime.Version())
		return exitOK
	}

	var handler slog.Handler
	var logs *enclave.LogHandler
	if strings.EqualFold(o.logSink, "none") || o.logSink == "" {
		// Asynchronous: a console nobody reads must not block requests.
		console := enclave.NewConsoleHandler(stderr, o.logLevel)
		if o.logJSON {
			console = enclave.NewConsoleJSONHandler(stderr, o.logLevel)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = console.Close(cctx)
		}()
		handler = console
	} else {
		logs, err = enclave.NewLogHandler(enclave.LogConfig{Addr: o.logSink, Console: stderr, Level: o.logLevel, ConsoleJSON: o.logJSON})
		if err != nil {
			fmt.Fprintf(stderr, "enclaved: --log-sink: %v\n", err)
			return exitUsage
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = logs.Close(cctx)
		}()
		handler = logs
	}
	log := slog.New(handler)
	o.cfg.Logger = log
	o.cfg.SysFS = sysfs

	// The startup checks run first, so that outside an enclave the error
	// names the failed check rather than the missing /dev/nsm.
	var att lateAttester
	o.cfg.Attester = &att
	srv, err := enclave.New(o.cfg)
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	emu, err := emulatorFor(o, env.Emulator)
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	a, err := newAttester(o.nsm, emu)
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	if c, ok := a.(io.Closer); ok {
		defer c.Close()
	}
	att.a = a
	if o.nsm == nsmEmulated {
		log.Warn("DEVELOPMENT MODE: enclavekit.attest is served by the NSM emulator; its documents are not trusted by any verifier")
		printEmulatedPCRs(ctx, stdout, a)
	}
	kmsHandlers, err := o.kms.handlers(&att, log)
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	register := func(srv *enclave.Server) {
		srv.Handle(methodEcho, func(_ context.Context, body []byte) ([]byte, error) { return body, nil })
		for m, h := range kmsHandlers {
			srv.Handle(m, h)
		}
		if env.Handlers != nil {
			for m, h := range env.Handlers(log) {
				srv.Handle(m, h)
			}
		}
	}
	register(srv)
	stopTLS, err := serveTLS(ctx, o, &att, log, register, stdout, env.TLSReady)
	if err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	defer stopTLS()

	if err := srv.Listen(ctx); err != nil {
		if h := transport.Hint(err); h != "" {
			err = fmt.Errorf("%w; %s", err, h)
		}
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	addr := transport.AddrOf(srv.Addr())
	fmt.Fprintf(stdout, "enclaved: listening on %s\n", addr)
	if env.Ready != nil {
		env.Ready(addr)
	}
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, "enclaved:", err)
		return exitFailure
	}
	log.Info("enclaved: stopped")
	return exitOK
}

// lateAttester lets the server be created (and its startup checks run)
// before the NSM is opened. It is set before Serve.
type lateAttester struct{ a attest.Attester }

func (l *lateAttester) Attest(ctx context.Context, req attest.Request) ([]byte, error) {
	return l.a.Attest(ctx, req)
}

// configFlags names the flag of each server setting, so that a bad value
// is reported under the flag the user typed, not the library's field.
var configFlags = map[string]string{
	"Addr": "--listen", "MaxConns": "--max-conns", "MaxInFlight": "--max-in-flight",
	"MaxFrameSize": "--max-frame-size", "MaxInFlightBytes": "--max-in-flight-bytes",
	"ReadFrameTimeout": "--read-header-timeout", "IdleTimeout": "--idle-timeout",
	"WriteTimeout": "--write-timeout", "HandlerTimeout": "--handler-timeout",
	"DrainTimeout": "--drain-timeout", "MaxClockSkew": "--max-clock-skew",
	"ClockCheckInterval": "--clock-check-interval", "NSMTimeout": "--nsm-timeout",
}

// configField matches a setting's name in a Validate message, with the
// package's prefix when it leads the message.
var configField = func() *regexp.Regexp {
	names := make([]string, 0, len(configFlags))
	for f := range configFlags {
		names = append(names, f)
	}
	sort.Strings(names)
	return regexp.MustCompile(`(?:enclave: bad configuration: )?(?:Config\.)?\b(` + strings.Join(names, "|") + `)\b`)
}()

// flagError rewrites an enclave.Config validation error in flag terms:
// "--max-conns is -1, negative (0 means the default, 256)".
func flagError(err error) error {
	msg := configField.ReplaceAllStringFunc(err.Error(), func(m string) string {
		return configFlags[configField.FindStringSubmatch(m)[1]]
	})
	return errors.New(msg)
}
