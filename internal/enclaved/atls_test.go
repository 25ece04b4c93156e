package enclaved

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

func TestTLSFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"emulator root needs the emulator", []string{"--dev", "--emulator-root", "/tmp/x.pem"}, "needs --dev --nsm emulated"},
		{"bad tls address", []string{"--dev", "--tls-listen", "http://x"}, "--tls-listen"},
		{"bad document age", []string{"--dev", "--tls-max-document-age", "1s"}, "--tls-max-document-age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncbuf.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, virtioFS())
			if code != exitUsage || !strings.Contains(stderr.String(), tt.err) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d mentioning %q", code, stderr.String(), exitUsage, tt.err)
			}
		})
	}
}

var tlsLine = regexp.MustCompile(`enclaved: attested TLS on (\S+)`)

// TestTLSListen: with --tls-listen the same methods are served over
// attested TLS, and --emulator-root lets a client verify it.
func TestTLSListen(t *testing.T) {
	defer goleak.VerifyNone(t)
	root := filepath.Join(t.TempDir(), "root.pem")
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--tls-listen", "tcp://127.0.0.1:0",
			"--emulator-root", root, "--log-sink", "none", "--drain-timeout", "2s"}, &stdout, &stderr, virtioFS())
	}()
	waitListening(t, stdout.String)
	m := tlsLine.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no attested TLS address in:\n%s", stdout.String())
	}
	pemBytes, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	dial := func(opts attest.TLSOptions) (net.Conn, error) {
		raw, err := transport.Dial(context.Background(), m[1])
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return attest.ClientHandshake(ctx, raw, opts)
	}
	// The emulator reports the development PCRs: another PCR0 is refused.
	if _, err := dial(attest.TLSOptions{Roots: roots, PCRs: map[int][]byte{0: bytes.Repeat([]byte{0xab}, 48)}}); !errors.Is(err, attest.ErrPCRMismatch) {
		t.Fatalf("a document for another PCR0 accepted: %v", err)
	}
	c, err := dial(attest.TLSOptions{Roots: roots, PCRs: map[int][]byte{0: nsmtest.DevPCRs()[0]}, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: methodEcho, Body: []byte("over TLS")})
	if err := protocol.WriteFrame(c, req, 0); err != nil {
		t.Fatal(err)
	}
	p, err := protocol.ReadFrame(c, nil, protocol.MaxFrameSizeLimit)
	if err != nil {
		t.Fatal(err)
	}
	e, err := protocol.UnmarshalEnvelope(p)
	if err != nil || string(e.Body) != "over TLS" {
		t.Fatalf("echo over TLS: %+v, %v", e, err)
	}
	c.Close()
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("enclaved did not stop after cancel")
	}
}
