package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A proxyPeer is a relay from a loopback port to the benchmark's backend.
type proxyPeer struct {
	name    string
	addr    string    // where clients dial
	cmd     *exec.Cmd // nil for "direct"
	skipped string
	stderr  *bytes.Buffer // what the relay printed, for error reports
	// maxConns, when > 0, is the most connections the relay will hold
	// (HAProxy's maxconn under the descriptor limit).
	maxConns int
}

// benchProxy compares the enclavekit egress proxy with HAProxy, socat and
// no relay at all: one-stream throughput, the p99 of 1,000 connections ×
// 20 round trips, and memory per idle proxied connection.
func benchProxy(ctx context.Context, rounds int, sample time.Duration, idle int, r *report) ([]section, error) {
	tmp, err := os.MkdirTemp("", "enclavekit-benchreport-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	sinkAddr, sinkDone, closeSink := startSink()
	defer closeSink()
	echoAddr, closeEcho := startEcho()
	defer closeEcho()

	bin := filepath.Join(tmp, "enclavekit")
	logf("  building enclavekit")
	// Built in the main module (the parent directory), with its own
	// go.sum: the proxy is the binary users run.
	build := exec.Command("go", "build", "-o", bin, "./cmd/enclavekit")
	build.Dir = ".."
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building enclavekit: %w", err)
	}

	// start launches every relay in front of backend and returns them in
	// report order; stop ends them.
	start := func(backend string, maxConns int) ([]*proxyPeer, func(), error) {
		peers := []*proxyPeer{{name: "direct", addr: backend}}
		stop := func() {
			for _, p := range peers {
				if p.cmd != nil && p.cmd.Process != nil {
					// The whole process group: socat's forked children too.
					syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
					p.cmd.Wait()
				}
			}
		}
		ek, err := startEnclavekitProxy(tmp, bin, backend, maxConns)
		if err != nil {
			stop()
			return nil, nil, err
		}
		peers = append(peers, ek)
		peers = append(peers, startHAProxy(tmp, backend, maxConns), startSocat(backend))
		return peers, stop, nil
	}

	r.Machine.Peers = append(r.Machine.Peers, versionOf("haproxy", "-v"), versionOf("socat", "-V"))

	var out []section
	// One stream.
	peers, stop, err := start(sinkAddr, 64)
	if err != nil {
		return nil, err
	}
	names, byName := peerNames(peers)
	logf("  one-stream throughput")
	tput := section{ID: "proxy-throughput", Title: "Egress proxy: one stream, 1 MiB writes", Unit: "Gbit/s", HigherBetter: true,
		Reference: "HAProxy", Note: "Ratio: the peer's rate over HAProxy's in the same round (the issue asks enclavekit ≥ 1.00 × HAProxy). direct is the same stream with no relay."}
	tput, err = measure(tput, names, rounds, func(name string) (float64, error) {
		return streamOnce(byName[name].addr, sinkDone, sample)
	})
	stop()
	if err != nil {
		return nil, err
	}
	markSkipped(&tput, byName)
	out = append(out, tput)

	// 1,000 connections × 20 round trips of 64 B.
	peers, stop, err = start(echoAddr, 4096)
	if err != nil {
		return nil, err
	}
	names, byName = peerNames(peers)
	logf("  1,000 connections × 20 round trips")
	p99 := section{ID: "proxy-p99", Title: "Egress proxy: 1,000 connections × 20 round trips of 64 B, p99 latency", Unit: "ms",
		Reference: "HAProxy", Note: "Every connection is opened at once, then each makes 20 sequential 64-byte round trips; the p99 is over all 20,000 round trips (connection set-up excluded). Ratio: HAProxy's p99 over the peer's in the same round (≥ 1.00 = no worse than HAProxy)."}
	p99, err = measure(p99, names, rounds, func(name string) (float64, error) {
		return manyRoundTrips(byName[name].addr, 1000, 20, 64)
	})
	stop()
	if err != nil {
		return nil, err
	}
	markSkipped(&p99, byName)
	out = append(out, p99)

	// Memory per idle connection. The relay holds two descriptors per
	// connection (its two sockets); the clients' ends stay in this process
	// and the backend's live in a child process, so that each of the three
	// fits under the descriptor limit, which a container may pin. A fresh
	// backend: the earlier tests left thousands of TIME_WAIT sockets
	// towards the first one, which would hold its ports.
	echoAddr, echoConns, closeEcho2, err := startEchoProcess()
	if err != nil {
		return nil, err
	}
	defer closeEcho2()
	peers, stop, err = start(echoAddr, idle+100)
	if err != nil {
		return nil, err
	}
	defer stop()
	// The largest count the limit allows the enclavekit relay: two
	// descriptors per connection besides those it holds already
	// (standard streams, listener, poller, the Go runtime's own), and
	// relayFDSpare more. Counted once the connections of waitListening's
	// probe are gone.
	count := idle
	limNote := ""
	for deadline := time.Now().Add(60 * time.Second); echoConns() > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if ek := byNameOf(peers, "enclavekit"); ek != nil && ek.skipped == "" {
		if lim, own := fdLimit(), openFDs(ek.cmd.Process.Pid); lim > 0 && own > 0 && 2*idle+own+relayFDSpare > lim {
			count = (lim - own - relayFDSpare) / 2
			limNote = fmt.Sprintf("Measured at %d connections, not %d: this machine's descriptor limit is %d and could not be raised; "+
				"the enclavekit relay holds two descriptors per proxied connection (its two sockets; an idle one holds no splice pipe) "+
				"besides the %d it holds before them (standard streams, its listener and poller, the Go runtime's own), and %d are kept spare: (%d − %d − %d) / 2 = %d. "+
				"The clients' ends are in the benchmark's process and the backend's in a child process. ",
				count, idle, lim, own, relayFDSpare, lim, own, relayFDSpare, count)
		}
	}
	logf("  memory at %d idle connections", count)
	if hp := byNameOf(peers, "HAProxy"); hp != nil && hp.skipped == "" && hp.maxConns > 0 && hp.maxConns < count {
		limNote += fmt.Sprintf("HAProxy is measured at %d connections, its maxconn under this descriptor limit (it reserves two descriptors per splice pipe). ", hp.maxConns)
	}
	mem := section{ID: "proxy-idle-memory", Title: fmt.Sprintf("Egress proxy: resident memory per idle proxied connection at %d connections", count), Unit: "KiB/conn",
		Note: limNote + "Growth of the relay process's VmRSS (/proc/PID/status) from before the connections were opened to when all of them were established end to end (the backend accepted every one), divided by their number; measured once per relay, not interleaved. Kernel socket and pipe buffers are not in RSS. The target for enclavekit is ≤ 32 KiB. socat forks a process per connection, so one process's RSS does not describe it."}
	for _, p := range peers {
		rw := row{Peer: p.name}
		switch {
		case p.skipped != "":
			rw.Skipped = p.skipped
		case p.cmd == nil:
			rw.Skipped = "no relay process"
		case p.name == "socat":
			rw.Skipped = "a process per connection (fork)"
		default:
			n := count
			if p.maxConns > 0 {
				n = min(n, p.maxConns)
			}
			kib, err := idleMemory(p, echoAddr, echoConns, n)
			if err != nil {
				rw.Skipped = err.Error()
			} else {
				rw.Values = series{kib}
			}
		}
		mem.Rows = append(mem.Rows, rw)
	}
	out = append(out, mem)
	return out, nil
}

// relayFDSpare is how many descriptors the idle-memory figure leaves free
// in the relay beyond those it holds before the connections and two per
// connection: one connection's worth, so that a descriptor the relay
// opens on its own cannot make the last dial fail.
const relayFDSpare = 2

func byNameOf(peers []*proxyPeer, name string) *proxyPeer {
	for _, p := range peers {
		if p.name == name {
			return p
		}
	}
	return nil
}

func peerNames(peers []*proxyPeer) ([]string, map[string]*proxyPeer) {
	var names []string
	m := map[string]*proxyPeer{}
	for _, p := range peers {
		m[p.name] = p
		if p.skipped == "" {
			names = append(names, p.name)
		}
	}
	return names, m
}

// markSkipped adds a row for each peer that could not run.
func markSkipped(s *section, peers map[string]*proxyPeer) {
	for _, name := range []string{"direct", "enclavekit", "HAProxy", "socat"} {
		if p := peers[name]; p != nil && p.skipped != "" {
			s.Rows = append(s.Rows, row{Peer: name, Skipped: p.skipped})
		}
	}
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startEnclavekitProxy(tmp, bin, backend string, maxConns int) (*proxyPeer, error) {
	port := freePort()
	host, bport, _ := net.SplitHostPort(backend)
	cfg := fmt.Sprintf("routes:\n  - name: bench\n    listen: tcp://127.0.0.1:%d\n    to: %s\nallowlist:\n  - {address: %s, port: %s}\nlimits:\n  max_conns: %d\n",
		port, backend, host, bport, maxConns)
	file := filepath.Join(tmp, "enclavekit-proxy.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "proxy", "--config", file)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proxyPeer{name: "enclavekit", addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, stderr: &stderr}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitListening(p.addr); err != nil {
		return nil, fmt.Errorf("enclavekit proxy: %w: %s", err, stderr.String())
	}
	return p, nil
}

// startHAProxy runs HAProxy in TCP mode with splicing and two threads, as
// in the measurements.
func startHAProxy(tmp, backend string, maxConns int) *proxyPeer {
	p := &proxyPeer{name: "HAProxy"}
	path, err := exec.LookPath("haproxy")
	if err != nil {
		p.skipped = "haproxy not installed (make bench-report installs Debian's haproxy with apt-get when it can)"
		return p
	}
	port := freePort()
	// HAProxy refuses to start when its maxconn needs more descriptors than
	// it may open: two per connection, plus two per splice pipe (capped
	// here at maxpipes), plus a few.
	const maxPipes = 1024
	global := maxConns + 100
	if lim := fdLimit(); lim > 0 {
		global = min(global, (lim-2*maxPipes-500)/2)
	}
	cfg := fmt.Sprintf(`global
    maxconn %d
    maxpipes %d
    nbthread 2
defaults
    mode tcp
    timeout connect 10s
    timeout client 5m
    timeout server 5m
    option splice-request
    option splice-response
frontend bench
    bind 127.0.0.1:%d
    maxconn %d
    default_backend be
backend be
    server s1 %s maxconn %d
`, global, maxPipes, port, maxConns+10, backend, maxConns+10)
	file := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		p.skipped = err.Error()
		return p
	}
	p.maxConns = global
	p.cmd = exec.Command(path, "-db", "-f", file)
	var stderr bytes.Buffer
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	if err := p.cmd.Start(); err != nil {
		p.skipped = "haproxy: " + err.Error()
		return p
	}
	if err := waitListening(p.addr); err != nil {
		p.skipped = "haproxy: " + err.Error() + ": " + lastLine(stderr.String())
	}
	return p
}

// startSocat runs socat as a forking TCP relay: a stand-in for AWS
// vsock-proxy, which also copies through a small buffer in a select loop.
func startSocat(backend string) *proxyPeer {
	p := &proxyPeer{name: "socat"}
	path, err := exec.LookPath("socat")
	if err != nil {
		p.skipped = "socat not installed (make bench-report installs Debian's socat with apt-get when it can)"
		return p
	}
	port := freePort()
	p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	p.cmd = exec.Command(path, fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,backlog=4096", port), "TCP:"+backend)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.skipped = "socat: " + err.Error()
		return p
	}
	if err := waitListening(p.addr); err != nil {
		p.skipped = "socat: " + err.Error()
	}
	return p
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after 10s", addr)
}

// startSink accepts connections and reports each one's byte count when it
// reaches EOF.
func startSink() (string, <-chan int64, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	done := make(chan int64, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 256<<10)
				var n int64
				for {
					m, err := c.Read(buf)
					n += int64(m)
					if err != nil {
						break
					}
				}
				if n > 0 {
					done <- n
				}
			}()
		}
	}()
	return ln.Addr().String(), done, func() { ln.Close() }
}

// startEcho echoes every connection. (startEchoProcess counts a child's
// open connections from its descriptors.)
func startEcho() (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

// echoChildEnv makes benchreport run as startEchoProcess's child.
const echoChildEnv = "BENCHREPORT_ECHO_CHILD"

// runEchoChild is the child of startEchoProcess: an echo server whose
// address it prints, until its standard input closes.
func runEchoChild() {
	addr, closeEcho := startEcho()
	fmt.Println(addr)
	io.Copy(io.Discard, os.Stdin)
	closeEcho()
}

// startEchoProcess runs startEcho in a child process, so that the
// backend's ends of many connections do not count against this process's
// descriptor limit. open counts the connections it holds, from its
// descriptors.
func startEchoProcess() (addr string, open func() int64, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), echoChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, nil, err
	}
	stop = func() {
		stdin.Close()
		cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, nil, fmt.Errorf("echo child process: %w", err)
	}
	base := openFDs(cmd.Process.Pid)
	open = func() int64 { return int64(max(openFDs(cmd.Process.Pid)-base, 0)) }
	return strings.TrimSpace(line), open, stop, nil
}

// openFDs counts the open descriptors of process pid, or returns 0.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// streamOnce writes 1 MiB chunks for d over one connection, then waits
// until the sink has counted every byte, and returns Gbit/s.
func streamOnce(addr string, done <-chan int64, d time.Duration) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	var sent int64
	start := time.Now()
	for time.Since(start) < d {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case got := <-done:
		if got != sent {
			return 0, fmt.Errorf("%s: sink got %d bytes, sent %d", addr, got, sent)
		}
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("%s: sink did not finish", addr)
	}
	return float64(sent) * 8 / 1e9 / time.Since(start).Seconds(), nil
}

// manyRoundTrips opens conns connections at once, then each makes trips
// round trips of size bytes; it returns the p99 round trip in ms.
func manyRoundTrips(addr string, conns, trips, size int) (float64, error) {
	cs := make([]net.Conn, conns)
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for i := range cs {
		wg.Go(func() {
			d := net.Dialer{Timeout: 30 * time.Second}
			cs[i], errs[i] = d.Dial("tcp", addr)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	lat := make([]float64, conns*trips)
	startGate := make(chan struct{})
	for i, c := range cs {
		wg.Go(func() {
			buf := make([]byte, size)
			<-startGate
			c.SetDeadline(time.Now().Add(60 * time.Second))
			for k := range trips {
				t := time.Now()
				if _, err := c.Write(buf); err != nil {
					errs[i] = err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs[i] = err
					return
				}
				lat[i*trips+k] = float64(time.Since(t).Microseconds()) / 1000
			}
		})
	}
	close(startGate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return percentile(lat, 99), nil
}

// idleMemory opens n connections through p, waits until the backend holds
// all of them, and returns the growth of p's RSS per connection in KiB.
func idleMemory(p *proxyPeer, backend string, open func() int64, n int) (float64, error) {
	// Connections of the previous test (socat's killed children, say) may
	// still be closing: start from an idle backend.
	for deadline := time.Now().Add(60 * time.Second); open() > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	base := open()
	before, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	cs := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
		// The next relay's count starts from a settled backend.
		for deadline := time.Now().Add(60 * time.Second); open() > base && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			msg := ""
			if p.stderr != nil {
				msg = "; the relay's last message: " + lastLine(p.stderr.String())
			}
			return 0, fmt.Errorf("dial failed after %d connections: %v%s", len(cs), err, msg)
		}
		cs = append(cs, c)
	}
	deadline := time.Now().Add(60 * time.Second)
	for open()-base < int64(n) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d connections reached the backend", open()-base, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the relay settle its buffers
	after, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// versionOf returns the first line a program prints of its version, or
// that it is missing.
func versionOf(prog string, flag string) string {
	out, err := exec.Command(prog, flag).CombinedOutput()
	if err != nil && len(out) == 0 {
		return prog + ": not installed"
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(line), "version") {
			return strings.TrimSpace(line)
		}
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// lastLine returns the last non-empty line of s (a program's complaint).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// fdLimit is the descriptor limit this process (and its children) run
// under, or 0 if unknown.
func fdLimit() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return int(l.Cur)
}
