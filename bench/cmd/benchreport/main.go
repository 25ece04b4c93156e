// Command benchreport runs enclavekit's side-by-side benchmarks against the
// programs a user would pick instead, interleaved over several rounds, and
// writes docs/benchmarks.md with SVG charts it draws itself.
//
//	cd bench && go run ./cmd/benchreport -out ../docs
//
// Every figure is measured in the same run as its peers: each round runs
// every peer once, in alternating order, and ratios are taken within a
// round before their median is reported. Traffic stays on loopback.
// `make bench-report` installs socat and HAProxy first when it can; a peer
// that is missing is skipped and the report says why.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(echoChildEnv) != "" {
		runEchoChild()
		return
	}
	out := flag.String("out", "../docs", "directory for benchmarks.md and bench/*.svg")
	rounds := flag.Int("rounds", 5, "interleaved rounds per comparison")
	sample := flag.Duration("sample", time.Second, "duration of one throughput or RPC sample")
	idle := flag.Int("idle-conns", 10000, "idle proxied connections for the memory figure")
	only := flag.String("only", "", "run only this section: proxy, rpc or attest")
	flag.Parse()
	if *rounds < 1 || *sample <= 0 || *idle < 1 {
		fmt.Fprintln(os.Stderr, "benchreport: -rounds, -sample and -idle-conns must be positive")
		os.Exit(2)
	}
	raiseFDLimit(max(2**idle+1024, 65536))
	ctx := context.Background()
	r := &report{Rounds: *rounds, Sample: *sample, Started: time.Now().UTC()}
	r.Machine = readMachine()
	if *only == "" || *only == "attest" {
		logf("attestation: %d rounds", *rounds)
		r.Sections = append(r.Sections, benchAttest(*rounds, *sample, r)...)
	}
	if *only == "" || *only == "rpc" {
		logf("rpc: %d rounds", *rounds)
		secs, err := benchRPC(ctx, *rounds, *sample, r)
		if err != nil {
			fatal(err)
		}
		r.Sections = append(r.Sections, secs...)
	}
	if *only == "" || *only == "proxy" {
		logf("proxy: %d rounds", *rounds)
		secs, err := benchProxy(ctx, *rounds, *sample, *idle, r)
		if err != nil {
			fatal(err)
		}
		r.Sections = append(r.Sections, secs...)
	}
	if err := r.write(*out); err != nil {
		fatal(err)
	}
	logf("wrote %s/benchmarks.md", *out)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchreport: "+format+"\n", a...)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchreport:", err)
	os.Exit(1)
}

// raiseFDLimit lifts RLIMIT_NOFILE to n where the process may (the idle
// connection test holds a descriptor per connection here and in the echo
// child, two in the relay, which inherit the limit; HAProxy refuses to
// start when it cannot raise its own limit to what its maxconn needs).
func raiseFDLimit(n int) {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Cur >= uint64(n) {
		return
	}
	want := syscall.Rlimit{Cur: uint64(n), Max: max(l.Max, uint64(n))}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		want = syscall.Rlimit{Cur: l.Max, Max: l.Max}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
}
