package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// callTestEnclave runs a dev-mode enclave.Server on loopback TCP with an
// echo method; it is stopped at cleanup.
func callTestEnclave(t *testing.T) string {
	t.Helper()
	srv, err := enclave.New(enclave.Config{
		Addr:         "tcp://127.0.0.1:0",
		Dev:          true,
		SysFS:        fstest.MapFS{},
		Logger:       slog.New(slog.DiscardHandler),
		DrainTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("echo", func(_ context.Context, b []byte) ([]byte, error) { return b, nil })
	srv.Handle("fail", func(context.Context, []byte) ([]byte, error) { return nil, protocol.ErrUnauthenticated })
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return transport.AddrOf(srv.Addr())
}

func callCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// The acceptance check of issue 6: health through "call" prints dev true.
func TestCallCLIHealth(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	addr := callTestEnclave(t)
	for _, args := range [][]string{
		{"call", "--addr", addr, protocol.MethodHealth},
		{"call", protocol.MethodHealth, "--addr", addr}, // flags after the method
		{"health", "--addr", addr},
	} {
		code, out, errOut := callCLI(args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		var h protocol.HealthResponse
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			t.Fatalf("%v: output %q: %v", args, out, err)
		}
		if !h.Dev || !strings.Contains(out, `"dev": true`) {
			t.Fatalf("%v: output %q, want dev true", args, out)
		}
	}
}

func TestCallCLI(t *testing.T) {
	addr := callTestEnclave(t)
	file := filepath.Join(t.TempDir(), "req.json")
	os.WriteFile(file, []byte(`{"1": {"$bytes": "AAEC"}, "2": [1, -2, 1.5, true, null, "s"]}`), 0o600)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // exact, when not empty
		stderr string // substring
	}{
		{"echo object", []string{"call", "--addr", addr, "echo", `{"b": 2, "a": "x"}`}, exitOK, "{\n  \"a\": \"x\",\n  \"b\": 2\n}\n", ""},
		{"echo int keys and bytes from file", []string{"call", "--addr", addr, "echo", "@" + file}, exitOK,
			"{\n  \"1\": \"AAEC\",\n  \"2\": [\n    1,\n    -2,\n    1.5,\n    true,\n    null,\n    \"s\"\n  ]\n}\n", ""},
		{"empty body", []string{"call", "--addr", addr, "echo"}, exitOK, "null\n", ""},
		{"unknown method", []string{"call", "--addr", addr, "no.such"}, exitFailure, "", "unknown method"},
		{"remote error", []string{"call", "--addr", addr, "fail"}, exitFailure, "", "unauthenticated"},
		{"missing addr", []string{"call", "echo"}, exitUsage, "", "usage"},
		{"missing method", []string{"call", "--addr", addr}, exitUsage, "", "usage"},
		{"too many args", []string{"call", "--addr", addr, "echo", "1", "2"}, exitUsage, "", "usage"},
		{"bad json", []string{"call", "--addr", addr, "echo", "{"}, exitUsage, "", "invalid JSON"},
		{"trailing json", []string{"call", "--addr", addr, "echo", "1 2"}, exitUsage, "", "trailing"},
		{"missing file", []string{"call", "--addr", addr, "echo", "@/does/not/exist"}, exitUsage, "", "no such file"},
		{"bad flag", []string{"call", "--nope"}, exitUsage, "", "flag provided but not defined"},
		// A malformed address is a usage error (2); an unreachable one is not.
		{"bad addr", []string{"call", "--addr", "ftp://x", "echo"}, exitUsage, "", "bad address"},
		{"unreachable addr", []string{"call", "--timeout", "5s", "--addr", "tcp://127.0.0.1:1", "echo"}, exitFailure, "", "dial"},
		{"health bad addr", []string{"health", "--addr", "tcp://nope"}, exitUsage, "", "--addr"},
		{"ingress bad listen", []string{"ingress", "--listen", "ftp://x", "--to", "tcp://127.0.0.1:1"}, exitUsage, "", "--listen: transport: bad address"},
		{"logs bad listen", []string{"logs", "--listen", "tcp:/x"}, exitUsage, "", "enclavekit logs: --listen: transport: bad address"},
		{"help", []string{"call", "-h"}, exitOK, "", "usage"},
		{"health usage", []string{"health"}, exitUsage, "", "usage"},
		{"ingress usage", []string{"ingress", "--listen", "tcp://127.0.0.1:0"}, exitUsage, "", "usage"},
		{"logs usage", []string{"logs", "--level", "loud"}, exitUsage, "", "usage"},
		{"ingress bad framing", []string{"ingress", "--listen", "tcp://127.0.0.1:0", "--to", "tcp://127.0.0.1:1", "--framing", "http"}, exitUsage, "", `--framing "http": want auto, tls, frames or none`},
		{"logs parent CID", []string{"logs", "--listen", "tcp://127.0.0.1:0", "--allow-cids", "16,3"}, exitUsage, "", "--allow-cids: 3 is not an enclave CID"},
		{"logs bad CID", []string{"logs", "--listen", "tcp://127.0.0.1:0", "--allow-cids", "x"}, exitUsage, "", `--allow-cids: "x" is not a CID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := callCLI(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out, errOut)
			}
			if tc.stdout != "" && out != tc.stdout {
				t.Fatalf("stdout %q, want %q", out, tc.stdout)
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Fatalf("stderr %q, want it to contain %q", errOut, tc.stderr)
			}
		})
	}
}

func TestCallCLIDeadline(t *testing.T) {
	// A server that accepts and never answers: the call ends at --timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	start := time.Now()
	code, _, errOut := callCLI("call", "--timeout", "200ms", "--addr", "tcp://"+ln.Addr().String(), "echo")
	if code != exitFailure || !strings.Contains(errOut, "deadline exceeded") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestCallJSONToCBOR(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: CBOR diagnostic-free, as hex
		fail     bool
	}{
		{in: `1`, want: "01"},
		{in: `-1`, want: "20"},
		{in: `18446744073709551615`, want: "1bffffffffffffffff"},
		{in: `1.5`, want: "f93e00"},
		{in: `"a"`, want: "6161"},
		{in: `{"1": 2}`, want: "a10102"},
		{in: `{"01": 2}`, want: "a1623031" + "02"},
		{in: `{"1": 2, "x": 3}`, want: "a2613102617803"},
		{in: `{"$bytes": "AQI="}`, want: "420102"},
		{in: `[null, true]`, want: "82f6f5"},
		{in: `{"$bytes": 1}`, fail: true},
		{in: `{"$bytes": "!"}`, fail: true},
		{in: `1e400`, fail: true},
		// Integers beyond int64 stay integers (CBOR goes down to -2^64),
		// and are refused beyond CBOR's range rather than rounded.
		{in: `-9223372036854775809`, want: "3b8000000000000000"},
		{in: `-18446744073709551616`, want: "3bffffffffffffffff"},
		{in: `-18446744073709551617`, fail: true},
		{in: `18446744073709551616`, fail: true},
		{in: `[99999999999999999999999]`, fail: true},
		{in: `1.0`, want: "f93c00"},
		{in: `1E2`, want: "f95640"},
		{in: ``, fail: true},
	} {
		got, err := callJSONToCBOR([]byte(tc.in))
		if tc.fail {
			if err == nil {
				t.Errorf("%s: accepted", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if h := callHex(got); h != tc.want {
			t.Errorf("%s: CBOR %s, want %s", tc.in, h, tc.want)
		}
	}
}

func callHex(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

// FuzzCallCBORToJSON: untrusted response bodies never panic the printer,
// and whatever decodes prints as valid JSON.
func FuzzCallCBORToJSON(f *testing.F) {
	for _, s := range []string{`{"1": {"$bytes": "AAEC"}, "x": [1, -2, 1.5, true, null]}`, `"s"`, `[]`} {
		b, err := callJSONToCBOR([]byte(s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xf9, 0x7e, 0x00}) // NaN
	f.Add([]byte{0xa2, 0x01, 0x01, 0x61, 0x31, 0x02})
	f.Fuzz(func(t *testing.T, body []byte) {
		js, err := callResponseJSON("m", body)
		if err != nil {
			return
		}
		if !json.Valid(js) {
			t.Fatalf("invalid JSON %q", js)
		}
	})
}

// callStartCLI runs a long-running command until cleanup and returns its
// output buffers.
func callStartCLI(t *testing.T, args ...string) (stdout, stderr *syncbuf.Buffer) {
	t.Helper()
	stdout, stderr = &syncbuf.Buffer{}, &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
	})
	return stdout, stderr
}

// callWaitMatch waits for re to match in w and returns its first group.
func callWaitMatch(t *testing.T, w *syncbuf.Buffer, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(w.String()); m != nil {
			return m[1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no match for %s in %q", re, w.String())
	return ""
}

func TestIngressCLI(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	target := callTestEnclave(t)
	_, stderr := callStartCLI(t, "ingress", "--listen", "tcp://127.0.0.1:0", "--to", target, "--idle-timeout", "1m")
	addr := callWaitMatch(t, stderr, `listen=(tcp://\S+)`)
	// The enclave server answers protocol calls made through the ingress.
	code, out, errOut := callCLI("call", "--addr", addr, "echo", `"through the ingress"`)
	if code != exitOK || out != "\"through the ingress\"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestLogsCLI(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	stdout, stderr := callStartCLI(t, "logs", "--listen", "tcp://127.0.0.1:0", "--json", "--enclave", "dev-enclave")
	addr := callWaitMatch(t, stderr, `listening on (tcp://\S+)`)
	h, err := enclave.NewLogHandler(enclave.LogConfig{Addr: addr, Console: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).Info("hello\nparent", "k", "v")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	line := callWaitMatch(t, stdout, `(\{.*"msg":"helloparent".*\})`)
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["enclave"] != "dev-enclave" || rec["level"] != "INFO" || rec["attrs"].(map[string]any)["k"] != "v" {
		t.Fatalf("record %v", rec)
	}
}

// TestCallCBORToJSONEdges: response values JSON cannot hold without loss
// are printed exactly or refused, never silently altered.
func TestCallCBORToJSONEdges(t *testing.T) {
	for _, tc := range []struct {
		name, hex string
		want      string // compact JSON; "" means an error
	}{
		{"big negative", "3bffffffffffffffff", `-18446744073709551616`},
		{"max uint", "1bffffffffffffffff", `18446744073709551615`},
		{"NaN", "f97e00", `null`},
		{"byte string key", "a141016161", `{"AQ==":"a"}`},
		{"int and text keys collide", "a2016161613161" + "62", ""},
		{"int and float keys collide", "a201616af93c006162", ""},
		{"byte and text keys collide", "a2410161616441513d3d6162", ""},
		{"nested collision", "81a2016161613161" + "62", ""},
		{"distinct keys", "a2016161613261" + "62", `{"1":"a","2":"b"}`},
	} {
		body := make([]byte, len(tc.hex)/2)
		for i := range body {
			fmt.Sscanf(tc.hex[2*i:2*i+2], "%02x", &body[i])
		}
		js, err := callResponseJSON("m", body)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: printed %s, want an error", tc.name, js)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, js); err != nil || compact.String() != tc.want {
			t.Errorf("%s: printed %s, want %s", tc.name, compact.String(), tc.want)
		}
	}
}
