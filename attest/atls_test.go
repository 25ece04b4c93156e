package attest_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/internal/atlstest"
)

// atlsPCRs are recognisable PCR0-2 values for the emulator.
func atlsPCRs() map[int][]byte {
	m := map[int][]byte{}
	for i := range 3 {
		h := sha512.Sum384(fmt.Appendf(nil, "atls test PCR%d", i))
		m[i] = h[:]
	}
	return m
}

func dialATLS(t testing.TB, addr string, opts attest.TLSOptions) (*attest.TLSConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.ClientHandshake(ctx, raw, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// echoOnce checks that c carries application data after the verification.
func echoOnce(t testing.TB, c net.Conn) {
	t.Helper()
	msg := []byte("GET / HTTP/1.1\r\n\r\n")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// nonceAttester replaces every non-nil nonce with a fixed one: an enclave
// front that answers the Fresh request with a document from another
// session.
type nonceAttester struct{ attest.Attester }

func (a nonceAttester) Attest(ctx context.Context, req attest.Request) ([]byte, error) {
	if req.Nonce != nil {
		req.Nonce = bytes.Repeat([]byte{0x42}, attest.ExporterSize)
	}
	return a.Attester.Attest(ctx, req)
}

// hugeFresh answers the Fresh request with an oversized document.
type hugeFresh struct{ attest.Attester }

func (a hugeFresh) Attest(ctx context.Context, req attest.Request) ([]byte, error) {
	if req.Nonce != nil {
		return make([]byte, attest.MaxDocumentSize+1), nil
	}
	return a.Attester.Attest(ctx, req)
}

// TestAttestedTLS: a verifying client accepts the genuine enclave and
// refuses each failure with its own sentinel.
func TestAttestedTLS(t *testing.T) {
	srv := atlstest.Start(t, atlsPCRs(), nil)
	debug := atlstest.Start(t, nil, nil)
	replay := atlstest.Start(t, atlsPCRs(), func(a attest.Attester) attest.Attester { return nonceAttester{a} })
	huge := atlstest.Start(t, atlsPCRs(), func(a attest.Attester) attest.Attester { return hugeFresh{a} })
	other, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// A terminating proxy with its own key that copies the genuine
	// certificate's document into its own certificate.
	genuine, err := attest.DocumentFromCertificate(srv.Listener.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	ext, err := attest.MarshalExtensionValue(genuine)
	if err != nil {
		t.Fatal(err)
	}
	mitmReplay := atlstest.StartPlain(t, atlstest.SelfSigned(t, pkix.Extension{Id: attest.ExtensionOID, Value: ext}))
	mitmPlain := atlstest.StartPlain(t, atlstest.SelfSigned(t))

	wrongPCR := atlsPCRs()
	wrongPCR[1] = bytes.Repeat([]byte{0xee}, attest.PCRSize)
	roots := srv.Emulator.Roots()

	tests := []struct {
		name   string
		addr   string
		opts   attest.TLSOptions
		err    error
		substr string
	}{
		{"genuine", srv.Addr, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs}, nil, ""},
		{"genuine fresh", srv.Addr, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs, Fresh: true}, nil, ""},
		{"wrong PCR1", srv.Addr, attest.TLSOptions{Roots: roots, PCRs: wrongPCR}, attest.ErrPCRMismatch, "PCR1"},
		{"AWS root", srv.Addr, attest.TLSOptions{PCRs: srv.PCRs}, attest.ErrRootNotPinned, "AWS Nitro root"},
		{"unknown root", srv.Addr, attest.TLSOptions{Roots: other.Roots(), PCRs: srv.PCRs}, attest.ErrRootNotPinned, "trusted roots"},
		{"stale", srv.Addr, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs, Now: func() time.Time { return time.Now().Add(11 * time.Minute) }}, attest.ErrStale, "max age 10m0s"},
		{"stale by max age", srv.Addr, attest.TLSOptions{Roots: roots, AnyImage: true, MaxAge: time.Nanosecond}, attest.ErrStale, "max age 1ns"},
		{"debug mode", debug.Addr, attest.TLSOptions{Roots: debug.Emulator.Roots(), AnyImage: true}, attest.ErrDebugMode, "PCR0 all zeros"},
		{"debug mode allowed", debug.Addr, attest.TLSOptions{Roots: debug.Emulator.Roots(), AnyImage: true, AllowDebug: true}, nil, ""},
		{"proxy replays the genuine document", mitmReplay, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs}, attest.ErrTLSKeyMismatch, "another key"},
		{"proxy with an ordinary certificate", mitmPlain, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs}, attest.ErrNoAttestation, attest.ExtensionOIDString},
		{"replayed fresh document", replay.Addr, attest.TLSOptions{Roots: replay.Emulator.Roots(), PCRs: replay.PCRs, Fresh: true}, attest.ErrNotSessionBound, "replayed"},
		{"replayed document, no fresh check", replay.Addr, attest.TLSOptions{Roots: replay.Emulator.Roots(), PCRs: replay.PCRs}, nil, ""},
		{"enclave cannot attest the session", huge.Addr, attest.TLSOptions{Roots: huge.Emulator.Roots(), PCRs: huge.PCRs, Fresh: true}, attest.ErrFreshExchange, "attestation unavailable"},
		{"fresh against a plain TLS server", mitmPlain, attest.TLSOptions{Roots: roots, PCRs: srv.PCRs, Fresh: true}, attest.ErrNoAttestation, ""},
		{"bad options", srv.Addr, attest.TLSOptions{MaxAge: -1}, attest.ErrConfig, "negative"},
		{"no expected PCRs", srv.Addr, attest.TLSOptions{Roots: roots}, attest.ErrConfig, "any enclave image would pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialATLS(t, tt.addr, tt.opts)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if !strings.Contains(err.Error(), tt.substr) {
					t.Fatalf("err = %q, want it to mention %q", err, tt.substr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res := c.Result()
			if res.Document == nil || !bytes.Equal(res.Document.PublicKey, c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo) {
				t.Fatal("no document bound to the peer's key in the result")
			}
			if tt.opts.Fresh {
				cs := c.ConnectionState()
				want, _ := cs.ExportKeyingMaterial(attest.ExporterLabel, nil, attest.ExporterSize)
				if res.Fresh == nil || !bytes.Equal(res.Fresh.Nonce, want) {
					t.Fatal("fresh document missing or not bound to the exporter")
				}
				if res.Checks[len(res.Checks)-1] != attest.CheckFreshSession {
					t.Fatalf("checks %v do not end with the fresh check", res.Checks)
				}
			}
			echoOnce(t, c)
		})
	}
}

// TestFreshNotAcrossSessions: a fresh document obtained on one session
// does not verify as the fresh document of another (a relay that holds
// its own session with the enclave gets documents bound to that one).
func TestFreshNotAcrossSessions(t *testing.T) {
	srv := atlstest.Start(t, atlsPCRs(), nil)
	opts := attest.TLSOptions{Roots: srv.Emulator.Roots(), PCRs: srv.PCRs, Fresh: true}
	a, err := dialATLS(t, srv.Addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dialATLS(t, srv.Addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	csB := b.ConnectionState()
	nonceB, _ := csB.ExportKeyingMaterial(attest.ExporterLabel, nil, attest.ExporterSize)
	if bytes.Equal(a.Result().Fresh.Nonce, nonceB) {
		t.Fatal("two sessions share an exporter value")
	}
	// Session A's fresh document, checked as B's: the nonce is A's.
	_, err = attest.Verify(docBytesOf(t, srv), attest.VerifyOptions{Roots: srv.Emulator.Roots(), Nonce: nonceB})
	if !errors.Is(err, attest.ErrNonceMismatch) {
		t.Fatalf("err = %v, want ErrNonceMismatch", err)
	}
}

// docBytesOf asks for a fresh document on a new session and returns it:
// its nonce is that session's exporter value.
func docBytesOf(t *testing.T, srv *atlstest.Enclave) []byte {
	t.Helper()
	raw, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	defer tc.Close()
	if _, err := tc.Write(attest.FreshRequest()); err != nil {
		t.Fatal(err)
	}
	doc, err := attest.ReadFreshResponse(tc)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestNewTLSConfig: the tls.Config alone verifies in the handshake.
func TestNewTLSConfig(t *testing.T) {
	srv := atlstest.Start(t, atlsPCRs(), nil)
	for _, tt := range []struct {
		name string
		opts attest.TLSOptions
		err  error
	}{
		{"ok", attest.TLSOptions{Roots: srv.Emulator.Roots(), PCRs: srv.PCRs}, nil},
		{"AWS root", attest.TLSOptions{PCRs: srv.PCRs}, attest.ErrRootNotPinned},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := attest.NewTLSConfig(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tls.Dial("tcp", srv.Addr, cfg)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if c != nil {
				c.Close()
			}
		})
	}
	if _, err := attest.NewTLSConfig(attest.TLSOptions{PCRs: map[int][]byte{40: nil}}); !errors.Is(err, attest.ErrConfig) {
		t.Fatalf("bad PCR index: err = %v", err)
	}
}

func TestParseExtensionValue(t *testing.T) {
	long := bytes.Repeat([]byte{0xab}, 300)
	longDER, _ := asn1.Marshal(long)
	tests := []struct {
		name string
		in   []byte
		want []byte
		ok   bool
	}{
		{"short", []byte{0x04, 0x02, 0xaa, 0xbb}, []byte{0xaa, 0xbb}, true},
		{"long form", longDER, long, true},
		{"one byte long form", append([]byte{0x04, 0x81, 0x80}, make([]byte, 0x80)...), make([]byte, 0x80), true},
		{"empty", []byte{0x04, 0x00}, nil, false},
		{"nil", nil, nil, false},
		{"not an octet string", []byte{0x03, 0x01, 0x00}, nil, false},
		{"trailing byte", []byte{0x04, 0x01, 0xaa, 0x00}, nil, false},
		{"truncated", []byte{0x04, 0x03, 0xaa}, nil, false},
		{"non-minimal length", []byte{0x04, 0x81, 0x01, 0xaa}, nil, false},
		{"non-minimal two-byte length", append([]byte{0x04, 0x82, 0x00, 0x90}, make([]byte, 0x90)...), nil, false},
		{"indefinite length", []byte{0x04, 0x80, 0xaa, 0x00, 0x00}, nil, false},
		{"over the document limit", []byte{0x04, 0x83, 0x01, 0x00, 0x01}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attest.ParseExtensionValue(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, attest.ErrNoAttestation) {
				t.Fatalf("err = %v, not ErrNoAttestation", err)
			}
			if tt.ok && !bytes.Equal(got, tt.want) {
				t.Fatalf("got %x, want %x", got, tt.want)
			}
		})
	}
}

func TestDocumentFromCertificate(t *testing.T) {
	ext := func(crit bool) pkix.Extension {
		return pkix.Extension{Id: attest.ExtensionOID, Critical: crit, Value: []byte{0x04, 0x01, 0x84}}
	}
	tests := []struct {
		name string
		exts []pkix.Extension
		ok   bool
	}{
		{"one", []pkix.Extension{ext(false)}, true},
		{"none", nil, false},
		{"critical", []pkix.Extension{ext(true)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := atlstest.SelfSigned(t, tt.exts...)
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			_, err = attest.DocumentFromCertificate(leaf)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, attest.ErrNoAttestation)) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestReadFreshResponse(t *testing.T) {
	ok := attest.AppendFreshResponse(nil, attest.FreshStatusOK, []byte("doc"))
	bad := func(mut func([]byte) []byte) []byte { return mut(bytes.Clone(ok)) }
	tests := []struct {
		name   string
		in     []byte
		want   string
		substr string
	}{
		{"ok", ok, "doc", ""},
		{"error status", attest.AppendFreshResponse(nil, attest.FreshStatusError, []byte("attestation unavailable")), "", "attestation unavailable"},
		{"no magic", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "", "does not speak it"},
		{"version", bad(func(b []byte) []byte { b[8] = 2; return b }), "", "version 2"},
		{"status", bad(func(b []byte) []byte { b[9] = 7; return b }), "", "status 7"},
		{"empty document", attest.AppendFreshResponse(nil, attest.FreshStatusOK, nil), "", "length 0"},
		{"huge length", bad(func(b []byte) []byte { b[10] = 0xff; return b }), "", "want 1..65536"},
		{"huge error", bad(func(b []byte) []byte { b[9] = 1; b[12] = 0x10; return b }), "", "limit 256"},
		{"short body", ok[:len(ok)-1], "", "unexpected EOF"},
		{"short header", ok[:5], "", "header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attest.ReadFreshResponse(bytes.NewReader(tt.in))
			if tt.substr == "" {
				if err != nil || string(got) != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, attest.ErrFreshExchange) || !strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("err = %v, want ErrFreshExchange mentioning %q", err, tt.substr)
			}
		})
	}
}

func FuzzParseExtensionValue(f *testing.F) {
	for _, doc := range corpus(f, "valid") {
		v, err := attest.MarshalExtensionValue(doc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{0x04, 0x00})
	f.Add([]byte{0x04, 0x81, 0x80})
	f.Add([]byte{0x04, 0x83, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		doc, err := attest.ParseExtensionValue(v)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes (DER is unique).
		again, err := attest.MarshalExtensionValue(doc)
		if err != nil || !bytes.Equal(again, v) {
			t.Fatalf("%x parsed to %d bytes that re-encode to %x (%v)", v, len(doc), again, err)
		}
	})
}

func FuzzReadFreshResponse(f *testing.F) {
	for _, doc := range corpus(f, "valid") {
		f.Add(attest.AppendFreshResponse(nil, attest.FreshStatusOK, doc))
	}
	f.Add(attest.AppendFreshResponse(nil, attest.FreshStatusError, []byte("attestation unavailable")))
	f.Add(attest.FreshRequest())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		doc, err := attest.ReadFreshResponse(bytes.NewReader(in))
		if err != nil {
			if doc != nil {
				t.Fatal("a document and an error together")
			}
			if !errors.Is(err, attest.ErrFreshExchange) {
				t.Fatalf("error %v does not wrap ErrFreshExchange", err)
			}
			return
		}
		if len(doc) == 0 || len(doc) > attest.MaxDocumentSize || !bytes.Equal(attest.AppendFreshResponse(nil, attest.FreshStatusOK, doc), in[:len(doc)+14]) {
			t.Fatalf("accepted %x as a %d-byte document", in, len(doc))
		}
	})
}
