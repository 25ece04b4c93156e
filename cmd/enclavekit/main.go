package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
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

// commandTable is every command, in the order help lists them: what a
// developer and an operator reach for first, then building and testing.
// Each command's code is in cmd_NAME.go.
var commandTable = []command{
	{name: "dev", summary: "run the whole system on loopback and a scripted session (make dev)", run: runDev},
	{name: "health", summary: "print an enclave server's health report (enclavekit.health) as JSON: startup checks, clock skew, connections", run: runHealth},
	{name: "call", summary: "call a method of an enclave server (JSON in, JSON out)", run: runCall},
	{name: "attest", summary: "verify or inspect an attestation document; check an attested TLS endpoint", run: runAttest},
	{name: "logs", summary: "receive an enclave's log stream and print it", run: runLogs},
	{name: "ingress", summary: "forward TCP connections on the parent into the enclave", run: runIngress},
	{name: "proxy", summary: "run the parent egress proxy (routes, allowlist, CONNECT) from a YAML config", run: runProxy},
	{name: "vsock-proxy", summary: "drop-in for AWS vsock-proxy: LOCAL_PORT REMOTE_HOST REMOTE_PORT", run: runVsockProxy},
	{name: "credentials", summary: "push the instance role's AWS credentials into the enclave", run: runCredentials},
	{name: "kms", summary: "open a CiphertextForRecipient; print a key policy for an enclave's PCRs", run: runKMS},
	{name: "run", summary: "run enclaves with nitro-cli and their log sinks, ingress and egress from a YAML config; restart them when they fail", run: runRun},
	{name: "eif", summary: "build, describe and measure enclave image files (EIF)", run: runEIF},
	{name: "soak", summary: "(development) load the system on loopback for a while and check it holds (make soak)", run: runSoak},
}

// commands indexes commandTable by name.
var commands = func() map[string]command {
	m := make(map[string]command, len(commandTable))
	for _, c := range commandTable {
		if _, dup := m[c.name]; dup {
			panic("enclavekit: duplicate command " + c.name)
		}
		m[c.name] = c
	}
	return m
}()

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
	for _, c := range commandTable {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun \"enclavekit COMMAND -h\" for a command's flags, \"enclavekit --version\" for the version.")
}
