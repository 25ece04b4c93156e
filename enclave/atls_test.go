package enclave

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

func TestAttestedTLSConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  AttestedTLSConfig
		err  string
	}{
		{"zero value", AttestedTLSConfig{}, ""},
		{"set", AttestedTLSConfig{MaxDocumentAge: time.Minute, HandshakeTimeout: time.Second, FirstByteTimeout: time.Second}, ""},
		{"age too short", AttestedTLSConfig{MaxDocumentAge: time.Second}, "max document age 1s"},
		{"age too long", AttestedTLSConfig{MaxDocumentAge: 25 * time.Hour}, "10s..24h0m0s"},
		{"negative handshake timeout", AttestedTLSConfig{HandshakeTimeout: -1}, "handshake timeout"},
		{"negative first-byte timeout", AttestedTLSConfig{FirstByteTimeout: -1}, "first-byte timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
}

// flakyAttester fails while fail is set.
type flakyAttester struct {
	attest.Attester
	fail  atomic.Bool
	calls atomic.Int64
}

func (a *flakyAttester) Attest(ctx context.Context, req attest.Request) ([]byte, error) {
	a.calls.Add(1)
	if a.fail.Load() {
		return nil, errors.New("nsm unavailable")
	}
	return a.Attester.Attest(ctx, req)
}

func newTestAttester(t testing.TB) (*nsmtest.Emulator, *flakyAttester) {
	t.Helper()
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return emu, &flakyAttester{Attester: n}
}

// listenAttested serves attested TLS with the default configuration on
// a loopback TCP listener, closed when the test ends; inner is the plain
// listener clients dial.
func listenAttested(tb testing.TB, att attest.Attester) (inner net.Listener, ln *AttestedListener) {
	tb.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln, err = NewAttestedListener(tb.Context(), inner, att, quietATLS(AttestedTLSConfig{}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return inner, ln
}

func quietATLS(cfg AttestedTLSConfig) AttestedTLSConfig {
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// TestAttestedRenewal: the document is renewed at half MaxDocumentAge;
// a failed renewal is retried and the old certificate served meanwhile.
func TestAttestedRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, att := newTestAttester(t)
		ln, err := NewAttestedListener(t.Context(), newPipeListener(nil), att, quietATLS(AttestedTLSConfig{MaxDocumentAge: time.Minute}))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		first := ln.Certificate()
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if ln.Renewals() != 1 {
			t.Fatalf("renewed before half the max age: %d", ln.Renewals())
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		second := ln.Certificate()
		if ln.Renewals() != 2 || second.Equal(first) {
			t.Fatalf("not renewed at half the max age: %d renewals", ln.Renewals())
		}
		if !bytes.Equal(second.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo) {
			t.Fatal("renewal changed the key")
		}
		d, err := attest.DocumentFromCertificate(second)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := attest.ParseUnverified(d)
		if err != nil || !bytes.Equal(doc.PublicKey, ln.PublicKey()) {
			t.Fatalf("renewed document not bound to the key: %v", err)
		}

		att.fail.Store(true)
		calls := att.calls.Load()
		time.Sleep(30 * time.Second) // next renewal fails
		synctest.Wait()
		time.Sleep(3 * time.Second) // retried after MaxDocumentAge/20 (min 1s)
		synctest.Wait()
		if got := att.calls.Load() - calls; got < 2 {
			t.Fatalf("%d attempts after a failure, want a retry", got)
		}
		if !ln.Certificate().Equal(second) {
			t.Fatal("the certificate changed although renewal failed")
		}
		att.fail.Store(false)
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if ln.Renewals() != 3 {
			t.Fatalf("renewal did not recover: %d", ln.Renewals())
		}
	})
}

// TestAttestedListenerFirstDocument: no listener without a document.
func TestAttestedListenerFirstDocument(t *testing.T) {
	_, att := newTestAttester(t)
	att.fail.Store(true)
	_, err := NewAttestedListener(t.Context(), newPipeListener(nil), att, quietATLS(AttestedTLSConfig{}))
	if !errors.Is(err, ErrAttestedTLS) || !strings.Contains(err.Error(), "nsm unavailable") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewAttestedListener(t.Context(), newPipeListener(nil), nil, AttestedTLSConfig{}); !errors.Is(err, ErrAttestedTLS) {
		t.Fatalf("nil attester: err = %v", err)
	}
	if _, err := NewAttestedListener(t.Context(), newPipeListener(nil), att, AttestedTLSConfig{HandshakeTimeout: -1}); err == nil {
		t.Fatal("invalid config accepted")
	}
}

// TestAttestedTimeouts: a silent client, a stalled handshake and a
// stalled Fresh request are each cut off by their bound.
func TestAttestedTimeouts(t *testing.T) {
	tests := []struct {
		name   string
		client func(t *testing.T, c net.Conn)
		after  time.Duration // when the server's Read returns
		err    string
	}{
		{"no ClientHello", func(t *testing.T, c net.Conn) {}, 5 * time.Second, "handshake not completed within 5s"},
		{"half a Fresh request", func(t *testing.T, c net.Conn) {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			if err := tc.Handshake(); err != nil {
				t.Error(err)
			}
			tc.Write(attest.FreshRequest()[:3])
		}, 5 * time.Second, "reading the Fresh request"},
		{"no first byte", func(t *testing.T, c net.Conn) {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			if err := tc.Handshake(); err != nil {
				t.Error(err)
			}
		}, 7 * time.Second, "i/o timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, att := newTestAttester(t)
				pl := newPipeListener(nil)
				ln, err := NewAttestedListener(t.Context(), pl, att, quietATLS(AttestedTLSConfig{HandshakeTimeout: 5 * time.Second, FirstByteTimeout: 7 * time.Second}))
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				accepted := make(chan net.Conn, 1)
				go func() {
					sc, _ := ln.Accept()
					accepted <- sc
				}()
				client, err := pl.Dial()
				if err != nil {
					t.Fatal(err)
				}
				sc := <-accepted
				done := make(chan struct{})
				go func() {
					tt.client(t, client)
					close(done)
				}()
				defer sc.Close()
				start := time.Now()
				go func() {
					// Drain what the server writes, as a live peer would.
					<-done
					io.Copy(io.Discard, client)
				}()
				_, err = sc.Read(make([]byte, 1))
				if took := time.Since(start); took != tt.after {
					t.Errorf("Read returned after %v, want %v", took, tt.after)
				}
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Read err = %v, want %q", err, tt.err)
				}
				sc.Close()
				client.Close()
			})
		})
	}
}

// TestAttestedAppDeadline: the application's own earlier read deadline
// still applies while the listener waits for the first byte, and a later
// Read may try again.
func TestAttestedAppDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, att := newTestAttester(t)
		pl := newPipeListener(nil)
		ln, err := NewAttestedListener(t.Context(), pl, att, quietATLS(AttestedTLSConfig{}))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var client *tls.Conn
		hs := make(chan struct{})
		go func() {
			raw, _ := pl.Dial()
			client = tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			client.Handshake()
			close(hs)
		}()
		sc, _ := ln.Accept()
		defer sc.Close()
		sc.SetReadDeadline(time.Now().Add(time.Second))
		start := time.Now()
		if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("err = %v after %v, want a timeout after 1s", err, time.Since(start))
		}
		<-hs
		go client.Write([]byte("hi"))
		sc.SetReadDeadline(time.Time{})
		buf := make([]byte, 2)
		if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "hi" {
			t.Fatalf("after the timeout: %q, %v", buf, err)
		}
		client.Close()
	})
}

func TestReadFreshPrefix(t *testing.T) {
	req := attest.FreshRequest()
	tests := []struct {
		name    string
		in      []byte
		fresh   bool
		pending string
		err     string
	}{
		{"fresh", req, true, "", ""},
		{"fresh then data", append(bytes.Clone(req), "GET"...), true, "", ""},
		{"http", []byte("GET / HTTP/1.1\r\n"), false, "G", ""},
		{"enclavekit frame", []byte{0, 0, 0, 4, 1, 2, 3, 4}, false, "\x00", ""},
		{"0xff then other", []byte{0xff, 'e', 'x'}, false, "\xffex", ""},
		{"0xff then EOF", []byte{0xff}, false, "\xff", ""},
		{"magic then EOF", req[:8], true, "", "version"},
		{"bad version", append(bytes.Clone(req[:8]), 9), true, "", "version 9"},
		{"empty", nil, false, "", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fresh, pending, err := readFreshPrefix(bytes.NewReader(tt.in), nil)
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if fresh != tt.fresh || string(pending) != tt.pending {
				t.Fatalf("fresh %v, pending %q; want %v, %q", fresh, pending, tt.fresh, tt.pending)
			}
		})
	}
}

func FuzzReadFreshPrefix(f *testing.F) {
	f.Add(attest.FreshRequest())
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0, 0, 0, 1, 0})
	f.Add([]byte{0xff, 'e', 'k'})
	f.Add(append(attest.FreshMagic[:], 2))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		fresh, pending, err := readFreshPrefix(r, nil)
		consumed := len(in) - r.Len()
		switch {
		case fresh && err == nil:
			if consumed != len(attest.FreshRequest()) || !bytes.Equal(in[:consumed], attest.FreshRequest()) {
				t.Fatalf("took %x as the Fresh request", in[:consumed])
			}
		case err == nil:
			// Everything read is handed to the application, in order, and
			// never more than the magic's length.
			if !bytes.Equal(pending, in[:consumed]) || len(pending) > len(attest.FreshMagic) || len(pending) == 0 {
				t.Fatalf("read %x, handed on %x", in[:consumed], pending)
			}
		}
		if consumed > len(attest.FreshRequest()) {
			t.Fatalf("read %d bytes, more than a Fresh request", consumed)
		}
	})
}

// TestAttestedFreshOnTheWire: what the listener does with the first bytes
// of a session, seen from both ends.
func TestAttestedFreshOnTheWire(t *testing.T) {
	emu, att := newTestAttester(t)
	inner, ln := listenAttested(t, att)
	tests := []struct {
		name      string
		send      []byte
		app       string // what the application reads
		fresh     bool   // a document comes back
		clientErr string // the client's ReadFreshResponse error
		serverErr string
	}{
		{"fresh then data", append(attest.FreshRequest(), "hello"...), "hello", true, "", ""},
		{"data only", []byte("hello"), "hello", false, "", ""},
		{"0xff data", []byte("\xffex"), "\xffex", false, "", ""},
		{"unknown version", append(attest.FreshMagic[:], 9), "", false, "version 9, want 1", "Fresh request version 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted := make(chan net.Conn, 1)
			go func() {
				c, _ := ln.Accept()
				accepted <- c
			}()
			raw, err := net.Dial("tcp", inner.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			sc := (<-accepted).(*AttestedConn)
			defer sc.Close()
			type result struct {
				got string
				err error
			}
			server := make(chan result, 1)
			go func() {
				buf := make([]byte, max(len(tt.app), 1)) // a Read must happen
				_, err := io.ReadFull(sc, buf)
				server <- result{string(buf), err}
			}()
			tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			defer tc.Close()
			if _, err := tc.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.fresh || tt.clientErr != "" {
				doc, err := attest.ReadFreshResponse(tc)
				if tt.clientErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.clientErr) {
						t.Fatalf("client: %v, want %q", err, tt.clientErr)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					cs := tc.ConnectionState()
					nonce, _ := cs.ExportKeyingMaterial(attest.ExporterLabel, nil, attest.ExporterSize)
					if _, err := attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), Nonce: nonce, PublicKey: ln.PublicKey()}); err != nil {
						t.Fatalf("fresh document: %v", err)
					}
				}
			}
			r := <-server
			if tt.serverErr != "" {
				if r.err == nil || !strings.Contains(r.err.Error(), tt.serverErr) || !errors.Is(r.err, ErrAttestedTLS) {
					t.Fatalf("server: %v, want %q", r.err, tt.serverErr)
				}
				return
			}
			if r.err != nil || r.got != tt.app {
				t.Fatalf("application read %q, %v; want %q", r.got, r.err, tt.app)
			}
			if sc.FreshServed() != tt.fresh {
				t.Fatalf("FreshServed = %v", sc.FreshServed())
			}
		})
	}
}

// TestAttestedOverProxyV2: NewProxyV2Listener stacks under the attested
// listener: the header is read before the TLS handshake, and the client
// verifies as usual.
func TestAttestedOverProxyV2(t *testing.T) {
	emu, att := newTestAttester(t)
	if err := emu.SetPCRs(map[int][]byte{0: bytes.Repeat([]byte{1}, 48)}); err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewAttestedListener(t.Context(), NewProxyV2Listener(inner, time.Second), att, quietATLS(AttestedTLSConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client := netip.MustParseAddrPort("198.51.100.9:40000")
	done := make(chan error, 1)
	go func() {
		raw, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			done <- err
			return
		}
		raw.Write(proxyHeader(client, netip.MustParseAddrPort("127.0.0.1:443")))
		c, err := attest.ClientHandshake(t.Context(), raw, attest.TLSOptions{Roots: emu.Roots(), AnyImage: true, Fresh: true})
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		done <- err
	}()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("Read = %q, %v", buf, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := sc.RemoteAddr().String(); got != client.String() {
		t.Fatalf("RemoteAddr = %s, want %s", got, client)
	}
}

// TestAttestedConnConcurrentIO: both ends read and write 1 MiB at once
// (the server echoes), and Close unblocks a pending Read.
func TestAttestedConnConcurrentIO(t *testing.T) {
	emu, att := newTestAttester(t)
	emu.SetPCRs(map[int][]byte{0: bytes.Repeat([]byte{1}, 48)})
	inner, ln := listenAttested(t, att)
	echoed := make(chan error, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer sc.Close()
		_, err = io.CopyN(sc, sc, 1<<20)
		echoed <- err
	}()
	raw, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.ClientHandshake(t.Context(), raw, attest.TLSOptions{Roots: emu.Roots(), AnyImage: true, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	wrote := make(chan error, 1)
	go func() {
		for p := want; len(p) > 0; p = p[min(len(p), 4096):] {
			if _, err := c.Write(p[:min(len(p), 4096)]); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ")
	}

	// A Read blocked on a silent peer returns once the conn is closed.
	go func() {
		if sc, err := ln.Accept(); err == nil {
			sc.Close()
		}
	}()
	raw2, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	tc := tls.Client(raw2, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	defer tc.Close()
	tc.Handshake() // the server closes before or after it: either way Read ends
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read on a closed connection returned no error")
	}
}

func BenchmarkAttestedHandshake(b *testing.B) {
	emu, att := newTestAttester(b)
	emu.SetPCRs(map[int][]byte{0: bytes.Repeat([]byte{1}, 48)})
	inner, ln := listenAttested(b, att)
	go func() {
		for {
			sc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer sc.Close()
				sc.Read(make([]byte, 1))
			}()
		}
	}()
	for _, fresh := range []bool{false, true} {
		b.Run(map[bool]string{false: "certificate", true: "fresh"}[fresh], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				raw, err := net.Dial("tcp", inner.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c, err := attest.ClientHandshake(b.Context(), raw, attest.TLSOptions{Roots: emu.Roots(), AnyImage: true, Fresh: fresh})
				if err != nil {
					b.Fatal(err)
				}
				c.Write([]byte{0})
				c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

// TestAttestedStalledPrefixIsFinal: a timeout in the middle of the magic
// is final (the bytes already read cannot be handed back in order), unlike
// a timeout before the first byte.
func TestAttestedStalledPrefixIsFinal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, att := newTestAttester(t)
		pl := newPipeListener(nil)
		ln, err := NewAttestedListener(t.Context(), pl, att, quietATLS(AttestedTLSConfig{HandshakeTimeout: 5 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			sc, _ := ln.Accept()
			accepted <- sc
		}()
		raw, _ := pl.Dial()
		sc := <-accepted
		defer sc.Close()
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		defer tc.Close()
		go func() {
			if tc.Handshake() == nil {
				tc.Write(attest.FreshMagic[:2])
			}
		}()
		for range 2 {
			if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, ErrAttestedTLS) {
				t.Fatalf("Read = %v, want a final attested TLS error", err)
			}
		}
	})
}
