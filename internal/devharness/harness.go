package devharness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/enclaved"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/logsink"
	"github.com/enclavekit/enclavekit/parent/proxy"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Components that Options.Kill can stop before the step that needs them.
const (
	ComponentEnclave = "enclave"  // stopped before step 1 (health)
	ComponentProxy   = "proxy"    // stopped before step 4 (egress)
	ComponentHTTPS   = "https"    // stopped before step 4 (egress)
	ComponentIMDS    = "imds"     // stopped before step 5 (credentials)
	ComponentKMS     = "kms"      // stopped before step 6 (kms)
	ComponentLogSink = "log-sink" // stopped before step 8 (logs)
)

// Components lists the names Options.Kill accepts.
var Components = []string{ComponentEnclave, ComponentProxy, ComponentHTTPS, ComponentIMDS, ComponentKMS, ComponentLogSink}

// Methods the harness registers in the enclave beside enclaved's own. They
// exist only in the development harness.
const (
	methodEgress  = "dev.egress"
	methodLogMark = "dev.logmark"
	methodEcho    = "echo"
)

// Options configure Run.
type Options struct {
	// Out receives the progress lines and the summary (required).
	Out io.Writer
	// Keep leaves every component running after the session until ctx is
	// done, and prints the addresses and ready-to-paste commands.
	Keep bool
	// Verbose also prints the enclave's console and the proxy's log.
	Verbose bool
	// Kill names a component (see Components) to stop just before the
	// step that needs it, to show (and test) that the step then fails.
	Kill string
	// StepTimeout bounds each step; 0 means 20s.
	StepTimeout time.Duration
}

// Validate reports whether o is usable.
func (o Options) Validate() error {
	if o.Out == nil {
		return errors.New("devharness: Options.Out is nil")
	}
	if o.StepTimeout < 0 {
		return fmt.Errorf("devharness: Options.StepTimeout %v is negative", o.StepTimeout)
	}
	if o.Kill != "" && !slices.Contains(Components, o.Kill) {
		return fmt.Errorf("devharness: cannot kill %q: want one of %s", o.Kill, strings.Join(Components, ", "))
	}
	return nil
}

// StepError is returned by Run when a step fails; it names the step.
type StepError struct {
	Step int    // 1-based
	Name string // "health", "attestation", "echo", "egress", "logs"
	Err  error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("step %d (%s) failed: %v", e.Step, e.Name, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// env is one running development system.
type env struct {
	opts Options
	out  io.Writer

	https     *httptest.Server
	httpsPool *x509.CertPool
	canary    net.Listener // a loopback port that is not allowlisted
	canaryHit atomic.Int64

	sink     *logsink.Sink
	sinkAddr string
	sinkLogs *captureHandler
	sinkStop context.CancelFunc
	sinkDone chan error

	proxy        *proxy.Proxy
	proxyLogs    *captureHandler
	routeAddr    string // fixed route to the HTTPS test server
	kmsRouteAddr string // fixed route to KMS (through the recorder)
	connectAddr  string // CONNECT route
	proxyStop    context.CancelFunc
	proxyDone    chan error

	emu          *nsmtest.Emulator
	pcrs         map[int][]byte
	enclaveAddr  string
	enclaveOut   *syncbuf.Buffer
	enclaveStop  context.CancelFunc
	enclaveDone  chan int
	enclaveGone  atomic.Bool
	client       *parent.Client
	tlsAddr      string // enclaved --tls-listen (atls.go)
	lastDocument []byte
	tmpDir       string

	k kmsEnv // IMDS and KMS emulators, the KMS route recorder
}

// Run starts the system on loopback, runs the scripted session and stops
// everything again (or, with Keep, when ctx is done). It returns nil only
// if every step passed; otherwise a *StepError naming the failed step, or
// the error that kept a component from starting.
func Run(ctx context.Context, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if opts.StepTimeout == 0 {
		opts.StepTimeout = 20 * time.Second
	}
	e := &env{opts: opts, out: opts.Out}
	defer e.stop()
	start := time.Now()

	fmt.Fprintln(e.out, "enclavekit dev: the whole system on loopback TCP")
	fmt.Fprintln(e.out, "  DEVELOPMENT MODE: emulated NSM and overridden startup checks; nothing here is a real enclave")
	if err := e.startAll(ctx); err != nil {
		return err
	}

	steps := []struct {
		name string
		kill []string
		run  func(context.Context) (string, error)
	}{
		{"health", []string{ComponentEnclave}, e.stepHealth},
		{"attestation", nil, e.stepAttest},
		{"echo", nil, e.stepEcho},
		{"egress", []string{ComponentProxy, ComponentHTTPS}, e.stepEgress},
		{"credentials", []string{ComponentIMDS}, e.stepCredentials},
		{"kms", []string{ComponentKMS}, e.stepKMS},
		{"attested tls", nil, e.stepTLS}, // atls.go
		{"logs", []string{ComponentLogSink}, e.stepLogs},
	}
	for i, s := range steps {
		if slices.Contains(s.kill, opts.Kill) {
			fmt.Fprintf(e.out, "  (stopping the %s before step %d, as asked)\n", opts.Kill, i+1)
			e.kill(opts.Kill)
		}
		sctx, cancel := context.WithTimeout(ctx, opts.StepTimeout)
		t0 := time.Now()
		detail, err := s.run(sctx)
		cancel()
		took := fmtDuration(time.Since(t0))
		label := fmt.Sprintf("[%d/%d] %s", i+1, len(steps), s.name)
		if err != nil {
			fmt.Fprintf(e.out, "%-22s FAILED after %s\n      %v\n", label, took, err)
			// Errors cross the enclave boundary as generic codes; the
			// details are in the enclave's own log.
			for _, l := range e.enclaveProblems(3) {
				fmt.Fprintf(e.out, "      enclave log: %s\n", l)
			}
			fmt.Fprintf(e.out, "enclavekit dev: step %d (%s) failed; see above\n", i+1, s.name)
			return &StepError{Step: i + 1, Name: s.name, Err: err}
		}
		fmt.Fprintf(e.out, "%-22s ok  %8s  %s\n", label, took, detail)
	}
	fmt.Fprintf(e.out, "all %d steps passed in %s\n", len(steps), fmtDuration(time.Since(start)))

	if opts.Keep {
		if err := e.printKeep(); err != nil {
			return err
		}
		<-ctx.Done()
		fmt.Fprintln(e.out, "stopping")
	}
	return nil
}

// startAll starts the components in dependency order and prints where
// each listens.
func (e *env) startAll(ctx context.Context) error {
	// HTTPS test server: the egress destination. Its certificate is
	// trusted only by the enclave side's HTTP client.
	e.https = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the egress test server: %s %s\n", r.Method, r.URL.Path)
	}))
	e.https.StartTLS()
	e.httpsPool = x509.NewCertPool()
	e.httpsPool.AddCert(e.https.Certificate())
	httpsHost := strings.TrimPrefix(e.https.URL, "https://")

	// Canary: a loopback port the proxy must refuse. Any connection it
	// receives means the proxy dialled a destination it should not have.
	var err error
	e.canary, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the canary listener: %w", err)
	}
	go func() {
		for {
			c, err := e.canary.Accept()
			if err != nil {
				return
			}
			e.canaryHit.Add(1)
			c.Close()
		}
	}()

	// The NSM emulator (the enclave's), and the KMS side, whose emulator
	// verifies Recipient documents against the NSM emulator's root.
	e.pcrs = nsmtest.DevPCRs()
	e.emu, err = nsmtest.New(nsmtest.Options{PCRs: e.pcrs})
	if err != nil {
		return fmt.Errorf("NSM emulator: %w", err)
	}
	if e.tmpDir, err = os.MkdirTemp("", "enclavekit-dev-"); err != nil {
		return err
	}
	if err := e.startKMS(e.tmpDir); err != nil {
		return err
	}

	// Log sink.
	e.sinkLogs = newCaptureHandler(e.verboseWriter("sink"))
	e.sink, err = logsink.New(logsink.Config{Handler: e.sinkLogs, Enclave: "dev"})
	if err != nil {
		return fmt.Errorf("log sink: %w", err)
	}
	sinkLn, err := transport.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("log sink: %w", err)
	}
	e.sinkAddr = transport.AddrOf(sinkLn.Addr())
	var sctx context.Context
	sctx, e.sinkStop = context.WithCancel(context.Background())
	e.sinkDone = make(chan error, 1)
	go func() { e.sinkDone <- e.sink.Serve(sctx, sinkLn) }()

	// Egress proxy: a fixed route to the HTTPS server (as vsock://3:8000 is
	// to KMS in production) and a CONNECT route. Only the HTTPS server's
	// exact loopback IP and port are allowlisted.
	host, port, err := proxy.SplitHostPort(httpsHost)
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	kmsHost, kmsPort, err := proxy.SplitHostPort(e.k.recorder.Addr())
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	kmsAllow := proxy.AllowEntry{Address: kmsHost, Port: kmsPort}
	e.proxyLogs = newCaptureHandler(e.verboseWriter("proxy"))
	e.proxy, err = proxy.New(proxy.Config{
		Routes: []proxy.Route{
			{Name: "https-test", Listen: "tcp://127.0.0.1:0", To: httpsHost},
			{Name: "connect", Listen: "tcp://127.0.0.1:0", Connect: true},
			{Name: "kms", Listen: "tcp://127.0.0.1:0", To: e.k.recorder.Addr()},
		},
		Allowlist: []proxy.AllowEntry{{Address: host, Port: port}, kmsAllow},
		Limits:    proxy.Limits{DrainTimeout: 2 * time.Second, DialTimeout: 5 * time.Second},
	}, proxy.Options{Logger: slog.New(e.proxyLogs)})
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	if err := e.proxy.Listen(ctx); err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	e.routeAddr, e.connectAddr, e.kmsRouteAddr = e.proxy.Addr(0), e.proxy.Addr(1), e.proxy.Addr(2)
	var pctx context.Context
	pctx, e.proxyStop = context.WithCancel(context.Background())
	e.proxyDone = make(chan error, 1)
	go func() { e.proxyDone <- e.proxy.Serve(pctx) }()

	// The enclave: enclaved's own code path (flags, checks, logging,
	// server), in dev mode with an emulated NSM whose root we keep.
	e.enclaveOut = &syncbuf.Buffer{}
	console := io.Writer(e.enclaveOut)
	if w := e.verboseWriter("enclave"); w != nil {
		console = io.MultiWriter(e.enclaveOut, w)
	}
	ready := make(chan string, 1)
	var ectx context.Context
	ectx, e.enclaveStop = context.WithCancel(context.Background())
	e.enclaveDone = make(chan int, 1)
	args := []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0",
		"--log-sink", e.sinkAddr, "--log-level", "debug", "--drain-timeout", "2s"}
	args = append(args, e.k.enclaveArgs(e.kmsRouteAddr)...)
	args = append(args, tlsEnclaveArgs...)
	go func() {
		e.enclaveDone <- enclaved.Run(ectx, args, enclaved.Env{
			Stdout: console, Stderr: console, Emulator: e.emu,
			Handlers: e.enclaveHandlers,
			Ready:    func(addr string) { ready <- addr },
			TLSReady: func(addr string) { e.tlsAddr = addr },
		})
	}()
	select {
	case e.enclaveAddr = <-ready:
	case code := <-e.enclaveDone:
		e.enclaveGone.Store(true)
		return fmt.Errorf("the enclave server exited with status %d before listening:\n%s", code, e.enclaveOut.String())
	case <-time.After(e.opts.StepTimeout):
		return fmt.Errorf("the enclave server did not start listening within %v", e.opts.StepTimeout)
	}
	e.client, err = parent.Dial(ctx, e.enclaveAddr, parent.Options{CallTimeout: e.opts.StepTimeout})
	if err != nil {
		return fmt.Errorf("dialling the enclave server: %w", err)
	}

	fmt.Fprintf(e.out, "  enclave server   %s   enclaved --dev --nsm emulated (same code path as the binary)\n", e.enclaveAddr)
	fmt.Fprintf(e.out, "  log sink         %s   (vsock://3:5001 on EC2)\n", e.sinkAddr)
	fmt.Fprintf(e.out, "  egress proxy     %s -> %s (fixed route), %s (CONNECT)\n", e.routeAddr, httpsHost, e.connectAddr)
	fmt.Fprintf(e.out, "  https server     %s   (allowlisted, like the KMS route)\n", e.https.URL)
	fmt.Fprintf(e.out, "  KMS emulator     %s   via the proxy's route %s (vsock://3:8000 on EC2); keys pinned in the enclave\n", e.k.kms.URL(), e.kmsRouteAddr)
	fmt.Fprintf(e.out, "  IMDSv2 emulator  %s   role %s\n", e.k.imds.URL(), e.k.imds.Role())
	return nil
}

// enclaveHandlers are the dev-only methods, running inside the enclave
// server: they reach the outside world only through the proxy, as enclave
// code must.
func (e *env) enclaveHandlers(log *slog.Logger) map[string]enclave.Handler {
	return map[string]enclave.Handler{
		methodEgress: func(ctx context.Context, body []byte) ([]byte, error) {
			var req egressRequest
			if err := protocol.Unmarshal(body, &req); err != nil {
				return nil, fmt.Errorf("%w: %w", protocol.ErrBadRequest, err)
			}
			var res egressResult
			var err error
			switch req.Mode {
			case "fetch":
				res, err = fetchThroughRoute(ctx, e.routeAddr, e.https.URL+"/hello", e.httpsPool)
			case "refused":
				res, err = connectThrough(ctx, e.connectAddr, req.Target)
			default:
				return nil, fmt.Errorf("%w: mode %q", protocol.ErrBadRequest, req.Mode)
			}
			if err != nil {
				log.Warn("dev egress failed", "mode", req.Mode, "err", err)
				return nil, fmt.Errorf("%w: %w", protocol.ErrUnavailable, err)
			}
			log.Info("dev egress done", "mode", req.Mode, "status", res.Status, "bytes", len(res.Body))
			return protocol.Marshal(res)
		},
		methodLogMark: func(_ context.Context, body []byte) ([]byte, error) {
			log.Info("dev log marker", "marker", hex.EncodeToString(body))
			return nil, nil
		},
	}
}

type egressRequest struct {
	Mode   string `cbor:"1,keyasint"`
	Target string `cbor:"2,keyasint,omitempty"`
}

type egressResult struct {
	Status int    `cbor:"1,keyasint"`
	Body   []byte `cbor:"2,keyasint,omitempty"`
	TLS    string `cbor:"3,keyasint,omitempty"`
}

// fetchThroughRoute does an HTTPS GET whose TCP connection is the proxy's
// fixed route: TLS runs between the enclave and the server, and the proxy
// only forwards ciphertext.
func fetchThroughRoute(ctx context.Context, routeAddr, url string, roots *x509.CertPool) (egressResult, error) {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return transport.Dial(ctx, routeAddr) },
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return egressResult{}, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return egressResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return egressResult{}, err
	}
	return egressResult{Status: resp.StatusCode, Body: body, TLS: tls.VersionName(resp.TLS.Version)}, nil
}

// connectThrough asks the CONNECT route for target and returns the proxy's
// answer.
func connectThrough(ctx context.Context, connectAddr, target string) (egressResult, error) {
	c, err := transport.Dial(ctx, connectAddr)
	if err != nil {
		return egressResult{}, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return egressResult{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return egressResult{}, fmt.Errorf("reading the proxy's answer: %w", err)
	}
	resp.Body.Close()
	return egressResult{Status: resp.StatusCode}, nil
}

func (e *env) stepHealth(ctx context.Context) (string, error) {
	var h protocol.HealthResponse
	if err := e.client.Call(ctx, protocol.MethodHealth, &protocol.HealthRequest{Clock: true}, &h); err != nil {
		return "", err
	}
	if h.Clock == nil || h.Clock.Checks == 0 {
		return "", errors.New("health reports no clock reading from the NSM")
	}
	if !h.Dev {
		return "", errors.New("the server does not report dev mode, but it was started with --dev")
	}
	var checks []string
	for _, c := range h.Checks {
		state := "passed"
		switch {
		case !c.OK && c.Overridden:
			state = "overridden by --dev"
		case !c.OK:
			return "", fmt.Errorf("startup check %s failed and was not overridden: %s contains %q, want %q", c.Name, c.File, c.Found, c.Want)
		}
		// The emulated NSM stands in for a production enclave: not in
		// debug mode, with a clock that agrees, even under --dev.
		if !c.OK && (c.Name == enclave.CheckNSM || c.Name == enclave.CheckDebug || c.Name == enclave.CheckClock) {
			return "", fmt.Errorf("startup check %s failed against the emulated NSM: %s is %s, want %s", c.Name, c.File, c.Found, c.Want)
		}
		checks = append(checks, fmt.Sprintf("%s: %s is %q, want %q (%s)", c.Name, c.File, c.Found, c.Want, state))
	}
	if len(checks) == 0 {
		return "", errors.New("health reports no startup checks")
	}
	return fmt.Sprintf("version %s, dev=%v, uptime %dms, clock skew %v (bound ±%v)\n      %s", h.Version, h.Dev, h.UptimeMillis,
		time.Duration(h.Clock.SkewNanos).Round(time.Microsecond), time.Duration(h.Clock.MaxSkewNanos), strings.Join(checks, "\n      ")), nil
}

func (e *env) stepAttest(ctx context.Context) (string, error) {
	doc, err := e.client.Attest(ctx, parent.AttestOptions{Roots: e.emu.Roots(), PCRs: e.pcrs, MaxAge: time.Minute})
	if err != nil {
		return "", err
	}
	// The checks are real: the same enclave with a different expected PCR0
	// is refused.
	wrong := map[int][]byte{0: bytes.Repeat([]byte{0xee}, sha512.Size384), 1: e.pcrs[1], 2: e.pcrs[2]}
	_, err = e.client.Attest(ctx, parent.AttestOptions{Roots: e.emu.Roots(), PCRs: wrong, MaxAge: time.Minute})
	if !errors.Is(err, attest.ErrPCRMismatch) {
		return "", fmt.Errorf("a document was accepted against a wrong expected PCR0 (err = %v)", err)
	}
	// And the AWS root does not vouch for the emulator.
	_, err = e.client.Attest(ctx, parent.AttestOptions{PCRs: e.pcrs, MaxAge: time.Minute})
	if err == nil {
		return "", errors.New("an emulator document verified against the AWS root")
	}
	// Keep one raw document for the --keep commands.
	if e.opts.Keep {
		e.lastDocument, err = e.rawDocument(ctx)
		if err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("fresh 32-byte nonce; chain (to the emulator root), ES384 signature, nonce, freshness and PCR0-2 verified\n"+
		"      module %s, signed %s\n"+
		"      PCR0 %x\n      PCR1 %x\n      PCR2 %x\n"+
		"      refused as expected: a wrong PCR0, and the AWS root",
		doc.ModuleID, doc.Timestamp.Format(time.RFC3339Nano), doc.PCRs[0], doc.PCRs[1], doc.PCRs[2]), nil
}

func (e *env) rawDocument(ctx context.Context) ([]byte, error) {
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var resp protocol.AttestResponse
	if err := e.client.Call(ctx, protocol.MethodAttest, protocol.AttestRequest{Nonce: nonce}, &resp); err != nil {
		return nil, err
	}
	return resp.Document, nil
}

func (e *env) stepEcho(ctx context.Context) (string, error) {
	body := make([]byte, 4096)
	rand.Read(body)
	got, err := e.client.CallRaw(ctx, methodEcho, body)
	if err != nil {
		return "", err
	}
	if !bytes.Equal(got, body) {
		return "", fmt.Errorf("echo returned %d bytes that differ from the %d sent", len(got), len(body))
	}
	return fmt.Sprintf("%d random bytes through parent.Client and back, byte for byte", len(body)), nil
}

func (e *env) stepEgress(ctx context.Context) (string, error) {
	var fetched egressResult
	if err := e.client.Call(ctx, methodEgress, egressRequest{Mode: "fetch"}, &fetched); err != nil {
		return "", fmt.Errorf("the enclave could not fetch %s/hello through the proxy: %w", e.https.URL, err)
	}
	if fetched.Status != http.StatusOK || !bytes.HasPrefix(fetched.Body, []byte("hello from the egress test server")) {
		return "", fmt.Errorf("fetch through the proxy: status %d, body %q", fetched.Status, fetched.Body)
	}
	target := transport.AddrOf(e.canary.Addr())
	target = strings.TrimPrefix(target, "tcp://")
	var refused egressResult
	if err := e.client.Call(ctx, methodEgress, egressRequest{Mode: "refused", Target: target}, &refused); err != nil {
		return "", fmt.Errorf("CONNECT %s through the proxy: %w", target, err)
	}
	if refused.Status != http.StatusForbidden {
		return "", fmt.Errorf("CONNECT %s (not allowlisted) answered %d, want 403", target, refused.Status)
	}
	reason := e.proxyLogs.find("proxy: connection refused", "destination", target, "reason")
	if reason == "" {
		return "", fmt.Errorf("the proxy refused CONNECT %s but logged no reason", target)
	}
	if n := e.canaryHit.Load(); n != 0 {
		return "", fmt.Errorf("the proxy dialled %s %d times although it is not allowlisted", target, n)
	}
	return fmt.Sprintf("GET %s/hello via the fixed route: %d, %d bytes, %s inside the enclave\n"+
		"      CONNECT %s (not allowlisted): %d from the proxy, reason %q, nothing dialled",
		e.https.URL, fetched.Status, len(fetched.Body), fetched.TLS, target, refused.Status, reason), nil
}

func (e *env) stepLogs(ctx context.Context) (string, error) {
	// A sink that is not running fails the step at once, rather than
	// after the whole wait for the marker.
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.sinkAddr, "tcp://"), time.Second); err != nil {
		return "", fmt.Errorf("the log sink at %s is not running: %w", e.sinkAddr, err)
	} else {
		c.Close()
	}
	marker := make([]byte, 8)
	rand.Read(marker)
	want := hex.EncodeToString(marker)
	if _, err := e.client.CallRaw(ctx, methodLogMark, marker); err != nil {
		return "", err
	}
	if err := e.sinkLogs.wait(ctx, func(r capturedRecord) bool { return r.attrs["attrs.marker"] == want }); err != nil {
		return "", fmt.Errorf("the log sink did not receive the enclave's marker record %s: %w", want, err)
	}
	// The enclave's access log names every method the session called.
	var missing []string
	for _, m := range []string{protocol.MethodHealth, protocol.MethodAttest, methodEcho, methodEgress} {
		if e.sinkLogs.find("enclave server: request served", "attrs.method", m, "attrs.method") == "" {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("no record at the log sink for the enclave serving %s", strings.Join(missing, ", "))
	}
	return fmt.Sprintf("%d records at the sink, among them the access log of each step's request and a fresh marker", e.sinkLogs.len()), nil
}

// kill stops one component, as if it had crashed.
func (e *env) kill(component string) {
	switch component {
	case ComponentEnclave:
		e.stopEnclave()
	case ComponentProxy:
		e.proxy.Close()
		e.proxyStop()
		<-e.proxyDone
		e.proxyStop = nil
	case ComponentHTTPS:
		e.https.Close()
	case ComponentIMDS:
		e.k.imds.Close()
	case ComponentKMS:
		e.k.kms.Close()
	case ComponentLogSink:
		e.sinkStop()
		<-e.sinkDone
		e.sinkStop = nil
	}
}

func (e *env) stopEnclave() {
	if e.enclaveStop == nil || e.enclaveGone.Swap(true) {
		return
	}
	e.enclaveStop()
	<-e.enclaveDone
}

// stop shuts everything down, the enclave first so that its last records
// reach the sink.
func (e *env) stop() {
	if e.client != nil {
		e.client.Close()
	}
	e.stopEnclave()
	if e.proxyStop != nil {
		e.proxyStop()
		<-e.proxyDone
	}
	if e.sinkStop != nil {
		e.sinkStop()
		<-e.sinkDone
	}
	if e.https != nil {
		e.https.Close()
	}
	if e.canary != nil {
		e.canary.Close()
	}
	e.k.stop()
	if e.tmpDir != "" {
		os.RemoveAll(e.tmpDir)
	}
}

// printKeep prints the addresses and commands for exploring a kept system.
func (e *env) printKeep() error {
	dir := e.tmpDir
	root := filepath.Join(dir, "emulator-root.pem")
	doc := filepath.Join(dir, "attestation.cbor")
	if err := os.WriteFile(root, e.emu.RootPEM(), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(doc, e.lastDocument, 0o600); err != nil {
		return err
	}
	cert := filepath.Join(dir, "https-server.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.https.Certificate().Raw}), 0o600); err != nil {
		return err
	}
	connect := strings.TrimPrefix(e.connectAddr, "tcp://")
	canary := strings.TrimPrefix(transport.AddrOf(e.canary.Addr()), "tcp://")
	fmt.Fprintf(e.out, `
Everything keeps running until Ctrl-C. Try:
  go run ./cmd/enclavekit health --addr %[1]s
  go run ./cmd/enclavekit call --addr %[1]s echo '"hello"'
  go run ./cmd/enclavekit attest verify --root %[2]s --pcr 0=%[4]x --pcr 1=%[5]x --pcr 2=%[6]x %[3]s
  go run ./cmd/enclavekit attest tls %[12]s --root %[2]s --pcr 0=%[4]x --fresh
  curl --proxy http://%[7]s --cacert %[8]s %[9]s/hello      # allowlisted: 200
  curl --proxy http://%[7]s https://%[10]s/                  # not allowlisted: 403 from the proxy
(The files in %[11]s are removed on exit.)
`, e.enclaveAddr, root, doc, e.pcrs[0], e.pcrs[1], e.pcrs[2], connect, cert, e.https.URL, canary, dir, e.tlsAddr)
	return nil
}

// enclaveProblems returns the last n warning or error lines of the
// enclave's console.
func (e *env) enclaveProblems(n int) []string {
	if e.enclaveOut == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(e.enclaveOut.String(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	// Dev mode's own warnings are expected; skip them.
	kept := out[:0]
	for _, l := range out {
		if !strings.Contains(l, "DEVELOPMENT") && !strings.Contains(l, "startup check") {
			kept = append(kept, l)
		}
	}
	if len(kept) > n {
		kept = kept[len(kept)-n:]
	}
	return kept
}

func fmtDuration(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(10 * time.Millisecond).String()
}

func (e *env) verboseWriter(prefix string) io.Writer {
	if !e.opts.Verbose {
		return nil
	}
	return &prefixWriter{w: e.out, prefix: "  | " + prefix + ": "}
}

// prefixWriter prefixes each line written through it.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			io.WriteString(p.w, p.prefix+line)
		}
	}
	return len(b), nil
}
