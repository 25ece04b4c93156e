package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/transport"
)

const credentialsUsage = `usage:
  enclavekit credentials push --addr ADDR [--once] [--interval DUR] [--role NAME] [--imds-endpoint URL]

push reads the instance role's credentials from IMDSv2 and pushes them to
the enclave at ADDR (enclavekit.credentials), at once and then every
--interval until stopped, so that a restarted enclave gets them within one
interval and rotated credentials arrive before the old ones expire. With
--once it pushes once and exits. Secrets are never printed.
`

func runCredentials(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "push" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, credentialsUsage)
			return exitOK
		}
		fmt.Fprint(stderr, "enclavekit credentials: want the subcommand push\n\n", credentialsUsage)
		return exitUsage
	}
	const name = "enclavekit credentials push"
	fs := newKMSFlagSet(name, stderr)
	fs.Usage = func() { fmt.Fprint(stderr, credentialsUsage, "\nflags:\n"); fs.PrintDefaults() }
	addr := fs.String("addr", "", "the enclave's `ADDRESS` (vsock://CID:5000, or tcp://HOST:PORT in development)")
	once := fs.Bool("once", false, "push once and exit")
	interval := fs.Duration("interval", parent.DefaultPushInterval, "time between pushes, such as 1m")
	role := fs.String("role", "", "instance profile role `NAME` (default: the one role IMDS lists)")
	logFormat := fs.String("log-format", "text", "log lines as text or json")
	endpoint := fs.String("imds-endpoint", "", "IMDS endpoint `URL` (default: the SDK's, http://169.254.169.254)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q; the enclave's address goes in --addr\n", name, pos)
		return exitUsage
	}
	if *addr == "" {
		fmt.Fprintf(stderr, "%s: --addr is required: the enclave's address, such as vsock://16:5000\n", name)
		return exitUsage
	}
	if _, err := transport.ParseAddr(*addr); err != nil {
		fmt.Fprintf(stderr, "%s: --addr: %v\n", name, err)
		return exitUsage
	}
	if *interval <= 0 {
		fmt.Fprintf(stderr, "%s: --interval %v: want a positive duration such as 1m\n", name, *interval)
		return exitUsage
	}
	src := &parent.IMDSCredentials{Role: *role, Client: imds.New(imds.Options{Endpoint: *endpoint})}
	c, err := parent.Dial(ctx, *addr, parent.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, withHint(err))
		return exitFailure
	}
	defer c.Close()
	if *once {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		creds, err := src.Retrieve(cctx)
		if err == nil {
			err = c.PushCredentials(cctx, creds)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "pushed credentials %s (expires %s) to %s\n", creds.AccessKeyID, creds.Expires.UTC().Format(time.RFC3339), *addr)
		return exitOK
	}
	log, err := daemonLogger(stderr, *logFormat, slog.LevelInfo)
	if err != nil {
		return usageFail(fs, stderr, "%s: %v", name, err)
	}
	log.Info("pushing credentials", "to", *addr, "interval", *interval)
	_ = c.RunCredentialPush(ctx, parent.CredentialPush{Source: src, Interval: *interval, Logger: log})
	return exitOK
}
