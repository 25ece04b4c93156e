package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/transport"
)

// parseArgs parses flags that may appear before, between or after the
// positional arguments, and returns the positional ones; "--" ends the
// flags. Bad values of durations and numbers say what is wanted.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlagSet(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag.
		if len(args) >= len(rest)+1 && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagExit maps a flag parsing error to an exit code: -h is not an error.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// badValue matches the flag package's message for a value it cannot parse.
var badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (parse error|value out of range)`)

// parseFlagSet is fs.Parse, except that the line saying what is wrong
// comes before the usage, and a bad duration or number says what is
// wanted ("want a duration such as 10s") instead of the flag package's
// "parse error".
func parseFlagSet(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	if usage == nil {
		usage = func() {
			fmt.Fprintf(out, "usage of %s:\n", fs.Name())
			fs.PrintDefaults()
		}
	}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		usage()
		return err
	}
	if m := badValue.FindStringSubmatch(err.Error()); m != nil {
		if want := wantOf(fs.Lookup(m[2])); want != "" {
			err = fmt.Errorf("invalid value %q for flag -%s: want %s", m[1], m[2], want)
		}
	}
	name := fs.Name()
	if !strings.HasPrefix(name, "enclavekit") {
		name = "enclavekit " + name
	}
	fmt.Fprintf(out, "%s: %v\n", name, err)
	usage()
	return err
}

// wantOf describes the values flag f takes, for the flag types whose
// parse errors say nothing.
func wantOf(f *flag.Flag) string {
	if f == nil {
		return ""
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration such as 10s, 1m30s or 500ms"
	case int, int64:
		return "a whole number"
	case uint, uint64:
		return "a whole number, 0 or more"
	case float64:
		return "a number"
	}
	return ""
}

// usageFail prints one line saying what is wrong and how to fix it, then
// fs's usage, and returns the usage exit code.
func usageFail(fs *flag.FlagSet, stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, format+"\n", args...)
	if fs.Usage != nil {
		fs.Usage()
	}
	return exitUsage
}

// readInput reads the file at path, or standard input for "-", taking at
// most limit bytes from standard input (a file's size is known).
func readInput(path string, limit int64) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, limit))
	}
	return os.ReadFile(path)
}

// logLevel parses a --log-level value.
func logLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("bad --log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// daemonLogger is the logger of a long-running command: text or JSON
// lines on stderr (--log-format).
func daemonLogger(stderr io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// startMetrics serves the collectors at http://ADDR/metrics (see
// parent.ServeMetrics) until ctx ends; addr "" serves nothing. It returns
// the address it listens on.
func startMetrics(ctx context.Context, addr string, log *slog.Logger, collectors ...prometheus.Collector) (string, error) {
	if addr == "" {
		return "", nil
	}
	reg := prometheus.NewRegistry()
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return "", err
		}
	}
	ln, err := transport.Listen(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("--metrics: %s", withHint(err))
	}
	go func() {
		if err := parent.ServeMetrics(ctx, ln, reg); err != nil {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return transport.AddrOf(ln.Addr()), nil
}

// libErr renders a library error for the command line: each Go field name
// in names ("ingress: bad configuration: Config.Target") becomes the flag
// that sets it ("--to"), so users never see Go names.
func libErr(err error, names map[string]string) string {
	s := err.Error()
	for field, flagName := range names {
		s = regexp.MustCompile(regexp.QuoteMeta(field)+`(\[\d+\])?`).ReplaceAllString(s, flagName)
	}
	return s
}

// configFlagNames keys names by the text a package's configuration errors
// start with: its ErrConfig, then the field ("Config.Target").
func configFlagNames(errConfig error, names map[string]string) map[string]string {
	out := make(map[string]string, len(names))
	for field, flagName := range names {
		out[errConfig.Error()+": "+field] = flagName
	}
	return out
}

var ingressFlagNames = configFlagNames(ingress.ErrConfig, map[string]string{
	"Config.Target": "--to", "Config.Listen": "--listen",
	"Config.MaxConns": "--max-conns", "Config.MinRateGrace": "--min-rate-grace",
	"Config.Framing": "--framing", "Config.DialTimeout": "the dial timeout",
})

var logsFlagNames = configFlagNames(logsink.ErrConfig, map[string]string{
	"Config.Listen": "--listen", "Config.AllowCIDs": "--allow-cids",
})

var ramdiskFlagNames = map[string]string{
	"cpio: App.Env": "--env", "cpio: App.Cmd": "--cmd", "cpio: App.Path": "--path", "cpio: App.Binary": "--binary",
}
