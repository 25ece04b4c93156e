package devharness

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// The attested TLS step: an outside client reaches enclaved's --tls-listen
// port through the parent's ingress (the code path of "enclavekit
// ingress"), which forwards bytes only. Everything it needs is started and
// stopped inside the step.

// tlsEnclaveArgs are the enclaved flags the step needs.
var tlsEnclaveArgs = []string{"--tls-listen", "tcp://127.0.0.1:0"}

// recordingConn records every byte that crosses it, both ways: what the
// ingress forwarded to and from the enclave.
type recordingConn struct {
	net.Conn
	mu       sync.Mutex
	sent     *bytes.Buffer // ingress -> enclave
	received *bytes.Buffer // enclave -> ingress
}

func (c *recordingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.sent.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.received.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// capture holds the bytes of every connection the ingress forwarded.
type capture struct {
	mu    sync.Mutex
	conns []*recordingConn
}

func (cp *capture) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c, sent: &bytes.Buffer{}, received: &bytes.Buffer{}}
	cp.mu.Lock()
	cp.conns = append(cp.conns, rc)
	cp.mu.Unlock()
	return rc, nil
}

// bytes returns everything forwarded, both ways, and the count each way.
func (cp *capture) bytes() (all []byte, sent, received int) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, c := range cp.conns {
		c.mu.Lock()
		all = append(all, c.sent.Bytes()...)
		all = append(all, c.received.Bytes()...)
		sent += c.sent.Len()
		received += c.received.Len()
		c.mu.Unlock()
	}
	return all, sent, received
}

// startIngress runs a ingress.Server to target on loopback until stop.
func startIngress(ctx context.Context, target string, dial func(context.Context, string) (net.Conn, error)) (addr string, stop func(), err error) {
	in, err := ingress.New(ingress.Config{Target: target, Dial: dial, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", nil, err
	}
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.Serve(sctx, ln)
	}()
	return transport.AddrOf(ln.Addr()), func() { cancel(); <-done }, nil
}

// startMITM runs a TLS-terminating proxy with its own key in front of
// upstream: it completes TLS with the client using its certificate (which
// carries doc, when non-nil) and relays the plaintext over its own TLS
// session to upstream. A verifying client must refuse it.
func startMITM(upstream string, doc []byte) (addr string, stop func(), err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "terminating proxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if doc != nil {
		v, err := attest.MarshalExtensionValue(doc)
		if err != nil {
			return "", nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: attest.ExtensionOID, Value: v}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { relayPlaintext(tls.Server(c, cfg), upstream) })
		}
	})
	return "tcp://" + ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

func relayPlaintext(client *tls.Conn, upstream string) {
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if err := client.Handshake(); err != nil {
		return // the verifying client refused us
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := transport.Dial(ctx, upstream)
	if err != nil {
		return
	}
	up := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	defer up.Close()
	up.SetDeadline(time.Now().Add(10 * time.Second))
	go io.Copy(up, client)
	io.Copy(client, up)
}

// dialAttested connects to addr and verifies it as an outside client does.
func (e *env) dialAttested(ctx context.Context, addr string, fresh bool) (*attest.TLSConn, error) {
	raw, err := transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return attest.ClientHandshake(ctx, raw, attest.TLSOptions{Roots: e.emu.Roots(), PCRs: e.pcrs, MaxAge: time.Minute, Fresh: fresh})
}

// echoOver sends body to the enclave's echo method over c and checks the
// answer.
func echoOver(c net.Conn, body []byte) error {
	req, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: methodEcho, Body: body})
	if err != nil {
		return err
	}
	if err := protocol.WriteFrame(c, req, 0); err != nil {
		return err
	}
	p, err := protocol.ReadFrame(c, nil, protocol.MaxFrameSizeLimit)
	if err != nil {
		return err
	}
	resp, err := protocol.UnmarshalEnvelope(p)
	if err != nil {
		return err
	}
	if resp.Code != 0 || !bytes.Equal(resp.Body, body) {
		return fmt.Errorf("echo over attested TLS: code %d, %d bytes back for %d sent", resp.Code, len(resp.Body), len(body))
	}
	return nil
}

func (e *env) stepTLS(ctx context.Context) (string, error) {
	if e.tlsAddr == "" {
		return "", errors.New("the enclave reported no --tls-listen address")
	}
	var cp capture
	ingress, stopIngress, err := startIngress(ctx, e.tlsAddr, cp.dial)
	if err != nil {
		return "", fmt.Errorf("starting the ingress: %w", err)
	}
	defer stopIngress()

	c, err := e.dialAttested(ctx, ingress, true)
	if err != nil {
		return "", fmt.Errorf("verifying the enclave through the ingress: %w", err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	rnd := make([]byte, 16)
	rand.Read(rnd)
	canary := []byte("CANARY-card-number-" + hex.EncodeToString(rnd))
	if err := echoOver(c, canary); err != nil {
		return "", err
	}
	res := c.Result()
	cert := c.ConnectionState().PeerCertificates[0]
	c.Close()
	stopIngress() // all forwarded bytes are recorded now

	forwarded, sent, received := cp.bytes()
	if sent == 0 || received == 0 {
		return "", errors.New("the ingress forwarded nothing; the capture is broken")
	}
	if bytes.Contains(forwarded, canary) || bytes.Contains(forwarded, rnd) {
		return "", errors.New("the plaintext canary appeared in the bytes the ingress forwarded")
	}

	// A terminating proxy with its own key, replaying the genuine
	// document in its certificate; and one with an ordinary certificate.
	genuine, err := attest.DocumentFromCertificate(cert)
	if err != nil {
		return "", err
	}
	var refusals []string
	for _, m := range []struct {
		name string
		doc  []byte
		want error
		why  string
	}{
		{"replaying the genuine document", genuine, attest.ErrTLSKeyMismatch, "key mismatch"},
		{"with an ordinary certificate", nil, attest.ErrNoAttestation, "no attestation extension"},
	} {
		addr, stop, err := startMITM(e.tlsAddr, m.doc)
		if err != nil {
			return "", fmt.Errorf("starting the proxy %s: %w", m.name, err)
		}
		mc, err := e.dialAttested(ctx, addr, true)
		stop()
		if err == nil {
			mc.Close()
			return "", fmt.Errorf("a TLS-terminating proxy %s was accepted", m.name)
		}
		if !errors.Is(err, m.want) {
			return "", fmt.Errorf("the proxy %s was refused for the wrong reason: %w", m.name, err)
		}
		refusals = append(refusals, fmt.Sprintf("a terminating proxy %s (%s)", m.name, m.why))
	}

	return fmt.Sprintf("client -> ingress %s -> enclave %s: %s; echo over TLS byte for byte\n"+
		"      verified: %s\n"+
		"      the ingress forwarded %d bytes in, %d out; the %d-byte plaintext canary is not among them\n"+
		"      refused as expected: %s",
		ingress, e.tlsAddr, tls.VersionName(c.ConnectionState().Version), strings.Join(res.Checks, ", "), sent, received, len(canary), joinAnd(refusals)), nil
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + ", and " + s[len(s)-1]
}
