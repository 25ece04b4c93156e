package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"syscall"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/transport"
)

// buildVersion is the version stamped at link time (make install sets
// enclave.Version from git describe), else the module version.
func buildVersion() string { return enclave.BuildVersion() }

// Exit codes shared by every subcommand.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (remote error, verification failure…)
	exitUsage   = 2 // bad flags or arguments
)

// command is one subcommand. run gets the arguments after the command name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

// register adds a subcommand; each lives in its own cmd_*.go file.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("enclavekit: duplicate command " + c.name)
	}
	commands[c.name] = c
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 2 && args[0] == "help" {
		// "enclavekit help CMD" is "enclavekit CMD --help".
		c, ok := commands[args[1]]
		if !ok {
			fmt.Fprintf(stderr, "enclavekit help: unknown command %q; run \"enclavekit help\" for the list\n", args[1])
			return exitUsage
		}
		return c.run(ctx, []string{"--help"}, stdout, stderr)
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintf(stdout, "enclavekit %s (%s)\n", buildVersion(), runtime.Version())
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "enclavekit: unknown command %q; run \"enclavekit help\" for the list\n", args[0])
		return exitUsage
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

// withHint is err's text, followed by transport's advice for a vsock
// failure when there is one, on one line.
func withHint(err error) string {
	if h := transport.Hint(err); h != "" {
		return err.Error() + "; " + h
	}
	return err.Error()
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: enclavekit COMMAND [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun \"enclavekit COMMAND -h\" for a command's flags, \"enclavekit --version\" for the version.")
}
