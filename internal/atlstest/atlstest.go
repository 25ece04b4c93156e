// Package atlstest starts attested TLS endpoints on loopback for tests: an
// enclave (enclave.NewAttestedListener over an NSM emulator) and a
// TLS-terminating proxy with a certificate of its own. Both serve echo.
// Tests of the attested TLS client (attest) and of its command line
// (cmd/enclavekit) share it.
package atlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/testutil"
)

// Enclave is an attested TLS echo endpoint on loopback.
type Enclave struct {
	Emulator *nsmtest.Emulator
	Listener *enclave.AttestedListener
	Addr     string // host:port
	PCRs     map[int][]byte
}

// Start serves echo behind enclave.NewAttestedListener with an emulator
// reporting pcrs (nil: all zero, a debug-mode enclave). wrap, when set,
// wraps the attester, so that it can misbehave. Everything stops at the
// end of the test.
func Start(t testing.TB, pcrs map[int][]byte, wrap func(attest.Attester) attest.Attester) *Enclave {
	t.Helper()
	emu, err := nsmtest.New(nsmtest.Options{PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var a attest.Attester = n
	if wrap != nil {
		a = wrap(a)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := enclave.NewAttestedListener(t.Context(), inner, a, enclave.AttestedTLSConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	testutil.Serve(t, ln, testutil.Echo)
	return &Enclave{Emulator: emu, Listener: ln, Addr: inner.Addr().String(), PCRs: pcrs}
}

// RootFile writes the emulator's root certificate (PEM) to a file in the
// test's temporary directory and returns its path.
func (e *Enclave) RootFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(p, e.Emulator.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// SelfSigned makes a certificate for a new P-256 key carrying exts: what a
// TLS-terminating proxy presents.
func SelfSigned(t testing.TB, exts ...pkix.Extension) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "man in the middle"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// StartPlain serves echo over ordinary TLS 1.3 with cert (a terminating
// proxy's own endpoint) and returns its host:port.
func StartPlain(t testing.TB, cert tls.Certificate) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, tls.NewListener(inner, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}), testutil.Echo)
	return inner.Addr().String()
}
