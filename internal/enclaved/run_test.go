package enclaved

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

func virtioFS() fstest.MapFS {
	return fstest.MapFS{
		"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("virtio_rng.0\n")},
		"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"help", []string{"--help"}, exitOK, "-listen"},
		{"unknown flag", []string{"--nope"}, exitUsage, "flag provided but not defined"},
		{"bad nsm", []string{"--nsm", "tpm"}, exitUsage, `--nsm "tpm"`},
		{"emulated needs dev", []string{"--nsm", "emulated"}, exitUsage, "needs --dev"},
		{"bad listen", []string{"--listen", "http://x"}, exitUsage, "--listen"},
		{"bad max conns", []string{"--max-conns", "-1"}, exitUsage, "enclaved: --max-conns is -1, negative (0 means the default, 256)"},
		{"bad max frame size", []string{"--max-frame-size", "999999999"}, exitUsage, "enclaved: --max-frame-size is 999999999"},
		{"frame too large", []string{"--max-frame-size", "100000000"}, exitUsage, "--max-frame-size"},
		{"in-flight bytes below the frame size", []string{"--max-frame-size", "4096", "--max-in-flight-bytes", "4000"}, exitUsage, "--max-in-flight-bytes"},
		{"bad log level", []string{"--log-level", "loud"}, exitUsage, "log-level"},
		{"bad log sink", []string{"--log-sink", "udp://x:1", "--dev"}, exitUsage, "--log-sink"},
		{"arguments", []string{"serve"}, exitUsage, "only flags"},
		{"bad log format", []string{"--log-format", "xml"}, exitUsage, `invalid value "xml" for flag -log-format: want text or json`},
		{"kms alias", []string{"--kms-key", "alias/app"}, exitUsage, "--kms-key/--kms-proxy: kms: bad configuration: KMS key \"alias/app\" is an alias"},
		{"kms two regions", []string{"--kms-key", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
			"--kms-key", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, exitUsage, "different regions"},
		{"kms bad proxy", []string{"--kms-key", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "--kms-proxy", "http://x"}, exitUsage, "KMS proxy address"},
		{"kms roots without key", []string{"--kms-roots", "/dev/null"}, exitUsage, "--kms-roots needs at least one --kms-key"},
		{"negative clock skew", []string{"--max-clock-skew", "-1s"}, exitUsage, "--max-clock-skew"},
		{"negative clock interval", []string{"--clock-check-interval", "-1m"}, exitUsage, "--clock-check-interval"},
		{"negative nsm timeout", []string{"--nsm-timeout", "-1s"}, exitUsage, "--nsm-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncbuf.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, virtioFS())
			if code != tt.code || !strings.Contains(stderr.String(), tt.err) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d mentioning %q", code, stderr.String(), tt.code, tt.err)
			}
		})
	}
}

// TestRefusesOutsideEnclave: without --dev a failed startup check exits 1
// naming the file, what it found and what is required.
func TestRefusesOutsideEnclave(t *testing.T) {
	defer goleak.VerifyNone(t)
	var stdout, stderr syncbuf.Buffer
	code := run(context.Background(), []string{"--listen", "tcp://127.0.0.1:0", "--log-sink", "none"}, &stdout, &stderr, virtioFS())
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	for _, want := range []string{"/sys/devices/virtual/misc/hw_random/rng_current", `"virtio_rng.0"`, `"nsm-hwrng"`, "--dev"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stdout.String(), "listening") {
		t.Fatal("listened despite the failed check")
	}
}

var listenLine = regexp.MustCompile(`enclaved: listening on (\S+)`)

func waitListening(t *testing.T, out func() string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenLine.FindStringSubmatch(out()); m != nil {
			return m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("enclaved did not report its address; output:\n%s", out())
	return ""
}

func call(t *testing.T, addr, method string, body []byte) protocol.Envelope {
	t.Helper()
	nc, err := transport.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 9, Method: method, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(nc, req, 0); err != nil {
		t.Fatal(err)
	}
	p, err := protocol.ReadFrame(nc, nil, protocol.MaxFrameSizeLimit)
	if err != nil {
		t.Fatal(err)
	}
	e, err := protocol.UnmarshalEnvelope(p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDevServer runs enclaved in-process with --dev and the emulated NSM:
// echo, health (dev=true) and attest work; cancel drains and exits 0.
func TestDevServer(t *testing.T) {
	defer goleak.VerifyNone(t)
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none", "--drain-timeout", "2s"}, &stdout, &stderr, virtioFS())
	}()
	addr := waitListening(t, stdout.String)

	if r := call(t, addr, methodEcho, []byte("ping")); string(r.Body) != "ping" {
		t.Fatalf("echo: %+v", r)
	}
	r := call(t, addr, protocol.MethodHealth, nil)
	var h protocol.HealthResponse
	if err := protocol.Unmarshal(r.Body, &h); err != nil || !h.Dev || len(h.Checks) != 5 || !h.Checks[0].Overridden {
		t.Fatalf("health %+v, %v", h, err)
	}
	// The standalone emulated NSM is not in debug mode, and its clock
	// agrees: those checks pass, and its PCRs were printed at start.
	for _, c := range h.Checks[2:] {
		if !c.OK {
			t.Errorf("check %+v failed", c)
		}
	}
	for i, v := range nsmtest.DevPCRs() {
		if line := fmt.Sprintf("enclaved: emulated NSM: PCR%d %x\n", i, v); !strings.Contains(stdout.String(), line) {
			t.Errorf("stdout lacks %q:\n%s", line, stdout.String())
		}
	}
	body, _ := protocol.Marshal(&protocol.AttestRequest{Nonce: []byte("nonce-1")})
	r = call(t, addr, protocol.MethodAttest, body)
	var ar protocol.AttestResponse
	if err := protocol.Unmarshal(r.Body, &ar); err != nil || r.Code != 0 {
		t.Fatalf("attest: %+v, %v", r, err)
	}
	doc, err := attest.ParseUnverified(ar.Document)
	if err != nil {
		t.Fatalf("attestation document: %v", err)
	}
	if !bytes.Equal(doc.Nonce, []byte("nonce-1")) {
		t.Fatalf("document nonce %q", doc.Nonce)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("enclaved did not stop after cancel")
	}
	if !strings.Contains(stderr.String(), "DEVELOPMENT MODE") {
		t.Fatalf("no dev-mode warning on the console:\n%s", stderr.String())
	}
}

func TestNewAttester(t *testing.T) {
	if _, err := newAttester("tpm", nil); err == nil || !strings.Contains(err.Error(), "emulated") {
		t.Fatalf("unknown kind: %v", err)
	}
	a, err := newAttester(nsmEmulated, nil)
	if err != nil {
		t.Fatal(err)
	}
	if doc, err := a.Attest(context.Background(), attest.Request{UserData: []byte("u")}); err != nil || len(doc) == 0 {
		t.Fatalf("emulated Attest: %d bytes, %v", len(doc), err)
	}
	if c, ok := a.(io.Closer); ok {
		c.Close()
	}
	if _, err := os.Stat("/dev/nsm"); err != nil {
		if _, err := newAttester(nsmDevice, nil); err == nil || !strings.Contains(err.Error(), "/dev/nsm") {
			t.Fatalf("device outside an enclave: %v", err)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryUsed {
		if bin, err := buildBinary(); err == nil {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	os.Exit(code)
}

// binaryUsed is set by tests that need the binary (tests run sequentially).
var binaryUsed bool

// buildBinary builds enclaved once for the process tests.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "enclaved-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "enclaved")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/enclavekit/enclavekit/cmd/enclaved").CombinedOutput()
	if err != nil {
		return "", errors.New(string(out))
	}
	return bin, nil
})

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binaryUsed = true
	bin, err := buildBinary()
	if err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// TestBinaryOnThisMachine: the real binary against the real /sys. Outside
// a Nitro Enclave it must refuse to start with the rng_current message.
func TestBinaryOnThisMachine(t *testing.T) {
	rng, _ := os.ReadFile("/sys/devices/virtual/misc/hw_random/rng_current")
	if strings.TrimSpace(string(rng)) == "nsm-hwrng" {
		t.Skip("running inside a Nitro Enclave")
	}
	cmd := exec.Command(binary(t), "--listen", "tcp://127.0.0.1:0", "--log-sink", "none")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("exit: %v; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "rng_current") || !strings.Contains(string(out), `required "nsm-hwrng"`) {
		t.Fatalf("output lacks the rng_current message:\n%s", out)
	}
}

// TestBinarySIGTERM: SIGTERM stops accepting, drains and exits 0.
func TestBinarySIGTERM(t *testing.T) {
	cmd := exec.Command(binary(t), "--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	copied := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
		}
		close(copied)
	}()
	addr := waitListening(t, out.String)
	if r := call(t, addr, methodEcho, []byte("x")); string(r.Body) != "x" {
		t.Fatalf("echo: %+v", r)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-copied
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "draining") {
		t.Fatalf("no drain logged:\n%s", stderr.String())
	}
}

// BenchmarkEcho measures echo round trips through the enclaved binary's
// server (in-process, --dev, loopback TCP, one connection).
func BenchmarkEcho(b *testing.B) {
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none", "--log-level", "error"}, &stdout, &stderr, virtioFS())
	}()
	defer func() {
		cancel()
		<-done
	}()
	var addr string
	for addr == "" {
		if m := listenLine.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
		}
		time.Sleep(time.Millisecond)
	}
	nc, err := transport.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	body := bytes.Repeat([]byte("e"), 256)
	req, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: methodEcho, Body: body})
	fr, _ := protocol.NewFrameReader(nc, 0)
	fw, _ := protocol.NewFrameWriter(nc, 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := fw.WriteFrame(req); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

// The NSM checks' options are enclaved's own flags: a debug-mode emulator
// starts only as a loud warning under --dev, and the flags reach the
// server's configuration (the clock bound shows in health).
func TestDevServerDebugNSM(t *testing.T) {
	defer goleak.VerifyNone(t)
	emu, err := nsmtest.New(nsmtest.Options{Debug: true, ClockOffset: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none",
			"--max-clock-skew", "30s", "--clock-check-interval", "1h", "--drain-timeout", "2s"},
			Env{Stdout: &stdout, Stderr: &stderr, SysFS: virtioFS(), Emulator: emu})
	}()
	addr := waitListening(t, stdout.String)
	body, _ := protocol.Marshal(&protocol.HealthRequest{Clock: true})
	r := call(t, addr, protocol.MethodHealth, body)
	var h protocol.HealthResponse
	if err := protocol.Unmarshal(r.Body, &h); err != nil {
		t.Fatal(err)
	}
	got := map[string]protocol.CheckResult{}
	for _, c := range h.Checks {
		got[c.Name] = c
	}
	if c := got["debug"]; c.OK || !c.Overridden || !strings.Contains(c.Found, "all zeros") {
		t.Errorf("debug check %+v", c)
	}
	if c := got["clock"]; c.OK || !c.Overridden || !strings.Contains(c.Want, "30s") {
		t.Errorf("clock check %+v", c)
	}
	if h.Clock == nil || h.Clock.MaxSkewNanos != int64(30*time.Second) || h.Clock.IntervalMillis != uint64(time.Hour.Milliseconds()) {
		t.Errorf("clock %+v", h.Clock)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "check=debug") {
		t.Fatalf("no warning about the debug check:\n%s", stderr.String())
	}
}
