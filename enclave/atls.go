package enclave

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/attest"
)

// Defaults of AttestedTLSConfig.
const (
	// DefaultMaxDocumentAge bounds the age of the document in the served
	// certificate; it is renewed at half this age.
	DefaultMaxDocumentAge = 10 * time.Minute
	// DefaultHandshakeTimeout bounds a TLS handshake, and separately the
	// Fresh exchange (reading the request, attesting, writing the answer).
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultFirstByteTimeout bounds the wait for a client's first
	// application byte after the handshake (its Fresh request, or its
	// first request to the application).
	DefaultFirstByteTimeout = 2 * time.Minute

	minMaxDocumentAge = 10 * time.Second
	maxMaxDocumentAge = 24 * time.Hour
)

// ErrAttestedTLS is wrapped by the errors of the attested TLS listener and
// its connections (handshake timeout, a failed Fresh exchange, a failed
// attestation).
var ErrAttestedTLS = errors.New("enclave: attested TLS")

// AttestedTLSConfig configures NewAttestedListener. The zero value is
// valid: every zero field takes the default documented on it.
type AttestedTLSConfig struct {
	// MaxDocumentAge is the age the certificate's attestation document may
	// reach: a new document (and certificate, same key) is made when the
	// current one is half this old, and retried until it succeeds.
	// Clients check the age against their own bound (attest.TLSOptions.MaxAge,
	// also 10 minutes by default). 10s..24h; 0 means DefaultMaxDocumentAge
	// (10m).
	MaxDocumentAge time.Duration

	// HandshakeTimeout bounds each TLS handshake, and the Fresh exchange
	// once its first byte arrived. 0 means DefaultHandshakeTimeout (10s).
	HandshakeTimeout time.Duration

	// FirstByteTimeout bounds the wait, after the handshake, for the
	// client's first byte (or the application's own read deadline, if
	// earlier). 0 means DefaultFirstByteTimeout (2m).
	FirstByteTimeout time.Duration

	// Logger receives renewal and connection events. nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first invalid field, its value and the accepted
// values; the error wraps ErrConfig. (Its fields are named in words, as
// enclaved's --tls-* flags describe them.)
func (c AttestedTLSConfig) Validate() error {
	if c.MaxDocumentAge != 0 && (c.MaxDocumentAge < minMaxDocumentAge || c.MaxDocumentAge > maxMaxDocumentAge) {
		return fmt.Errorf("%w: attested TLS max document age %v, outside %v..%v (0 means the default, %v)", ErrConfig, c.MaxDocumentAge, minMaxDocumentAge, maxMaxDocumentAge, DefaultMaxDocumentAge)
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("%w: attested TLS handshake timeout %v, negative (0 means the default, %v)", ErrConfig, c.HandshakeTimeout, DefaultHandshakeTimeout)
	}
	if c.FirstByteTimeout < 0 {
		return fmt.Errorf("%w: attested TLS first-byte timeout %v, negative (0 means the default, %v)", ErrConfig, c.FirstByteTimeout, DefaultFirstByteTimeout)
	}
	return nil
}

func (c AttestedTLSConfig) withDefaults() AttestedTLSConfig {
	if c.MaxDocumentAge == 0 {
		c.MaxDocumentAge = DefaultMaxDocumentAge
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.FirstByteTimeout == 0 {
		c.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// AttestedListener serves attested TLS 1.3 on connections accepted from an
// inner listener. Its ECDSA P-256 key is generated in NewAttestedListener
// and held only in memory: it is never serialized, exported or logged. The
// certificate is self-signed and carries, in the non-critical extension
// attest.ExtensionOID, an attestation document whose public_key is the
// certificate's SubjectPublicKeyInfo; it is renewed in the background (see
// AttestedTLSConfig.MaxDocumentAge).
//
// Accept returns at once; the handshake runs on the connection's first
// Read or Write (or Handshake), bounded by HandshakeTimeout, so a slow
// client never blocks the accept loop. On the first Read, a client that
// starts with the Fresh request (attest.FreshRequest) gets a document whose
// nonce is its session's exporter value, and the application sees only
// the bytes after it. Any server that speaks first-byte-from-the-client
// protocols over a net.Listener (Server.ServeListener, net/http) can sit
// behind it.
type AttestedListener struct {
	inner net.Listener
	att   attest.Attester
	cfg   AttestedTLSConfig
	log   *slog.Logger
	key   *ecdsa.PrivateKey
	spki  []byte
	tls   *tls.Config

	cert     atomic.Pointer[tls.Certificate]
	docTime  atomic.Int64 // unix nanoseconds of the current document
	renewals atomic.Uint64

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// NewAttestedListener generates the key, gets the first document from att
// (failing if it cannot) and starts renewing it until ctx is done or the
// listener is closed. Closing the listener closes inner.
func NewAttestedListener(ctx context.Context, inner net.Listener, att attest.Attester, cfg AttestedTLSConfig) (*AttestedListener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if att == nil {
		return nil, fmt.Errorf("%w: no attester", ErrAttestedTLS)
	}
	cfg = cfg.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%w: generating the key: %w", ErrAttestedTLS, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the public key: %w", ErrAttestedTLS, err)
	}
	l := &AttestedListener{inner: inner, att: att, cfg: cfg, log: cfg.Logger, key: key, spki: spki, done: make(chan struct{})}
	l.tls = &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Every handshake is a full one, so every client sees the
		// current certificate and document (a resumed session would
		// skip them).
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.cert.Load(), nil
		},
	}
	if err := l.renew(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	l.stop = cancel
	go l.renewLoop(rctx)
	return l, nil
}

// renew makes a new document and certificate for the key.
func (l *AttestedListener) renew(ctx context.Context) error {
	actx, cancel := context.WithTimeout(ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	doc, err := l.att.Attest(actx, attest.Request{PublicKey: l.spki})
	if err != nil {
		return fmt.Errorf("%w: attesting the TLS key: %w", ErrAttestedTLS, err)
	}
	ext, err := attest.MarshalExtensionValue(doc)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAttestedTLS, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAttestedTLS, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "enclavekit attested TLS"},
		// The validity is not what clients rely on (they check the
		// document's age); it covers the document's life with margin.
		NotBefore:       now.Add(-time.Hour),
		NotAfter:        now.Add(2*l.cfg.MaxDocumentAge + time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: attest.ExtensionOID, Critical: false, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &l.key.PublicKey, l.key)
	if err != nil {
		return fmt.Errorf("%w: creating the certificate: %w", ErrAttestedTLS, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAttestedTLS, err)
	}
	l.cert.Store(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: l.key, Leaf: leaf})
	l.docTime.Store(now.UnixNano())
	l.renewals.Add(1)
	return nil
}

// renewLoop renews at half MaxDocumentAge, retrying failures sooner.
func (l *AttestedListener) renewLoop(ctx context.Context) {
	defer close(l.done)
	every := l.cfg.MaxDocumentAge / 2
	retry := max(l.cfg.MaxDocumentAge/20, time.Second)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			age := time.Since(time.Unix(0, l.docTime.Load()))
			lvl := slog.LevelWarn
			if age > l.cfg.MaxDocumentAge {
				lvl = slog.LevelError // clients now refuse the certificate
			}
			l.log.Log(ctx, lvl, "attested TLS: renewing the attestation document failed; retrying",
				"err", err, "document_age", age.Round(time.Second), "max_document_age", l.cfg.MaxDocumentAge, "retry_in", retry)
			t.Reset(retry)
			continue
		}
		l.log.Debug("attested TLS: attestation document renewed")
		t.Reset(every)
	}
}

// Certificate returns the certificate being served now.
func (l *AttestedListener) Certificate() *x509.Certificate { return l.cert.Load().Leaf }

// PublicKey returns the DER SubjectPublicKeyInfo of the listener's key,
// the public_key of its documents.
func (l *AttestedListener) PublicKey() []byte { return append([]byte(nil), l.spki...) }

// Renewals counts the documents made so far (the first one included).
func (l *AttestedListener) Renewals() uint64 { return l.renewals.Load() }

// Accept waits for the next connection and wraps it; see AttestedListener.
func (l *AttestedListener) Accept() (net.Conn, error) {
	nc, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	return &AttestedConn{l: l, tc: tls.Server(nc, l.tls)}, nil
}

// Close stops the renewal, closes the inner listener and waits for the
// renewal goroutine. Connections already accepted stay open.
func (l *AttestedListener) Close() error {
	err := l.inner.Close()
	l.closeOnce.Do(func() {
		l.stop()
		<-l.done
	})
	return err
}

// Addr returns the inner listener's address.
func (l *AttestedListener) Addr() net.Addr { return l.inner.Addr() }

// AttestedConn is a server connection of an AttestedListener.
type AttestedConn struct {
	l  *AttestedListener
	tc *tls.Conn

	hsMu   sync.Mutex // the handshake
	hsDone bool
	hsErr  error

	rdMu      sync.Mutex // Read, and the Fresh exchange on the first Read
	setupDone bool
	setupErr  error
	pending   []byte      // bytes read while looking for the Fresh magic
	fresh     atomic.Bool // a Fresh document was served

	wrMu sync.Mutex // whole writes, so the Fresh answer is not interleaved

	dlMu    sync.Mutex // the application's deadlines, restored after ours
	readDL  time.Time
	writeDL time.Time
}

// Handshake runs the TLS handshake now (it otherwise runs on the first
// Read or Write), bounded by ctx and HandshakeTimeout.
func (c *AttestedConn) Handshake(ctx context.Context) error {
	return c.handshake(ctx)
}

func (c *AttestedConn) handshake(ctx context.Context) error {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone {
		return c.hsErr
	}
	c.hsDone = true
	limit := time.Now().Add(c.l.cfg.HandshakeTimeout)
	c.dlMu.Lock()
	c.tc.SetReadDeadline(earlier(c.readDL, limit))
	c.tc.SetWriteDeadline(earlier(c.writeDL, limit))
	c.dlMu.Unlock()
	err := c.tc.HandshakeContext(ctx)
	c.restoreDeadlines()
	if err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			err = fmt.Errorf("%w: handshake not completed within %v: %w", ErrAttestedTLS, c.l.cfg.HandshakeTimeout, err)
		} else {
			err = fmt.Errorf("%w: handshake: %w", ErrAttestedTLS, err)
		}
		c.hsErr = err
	}
	return err
}

func (c *AttestedConn) restoreDeadlines() {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.tc.SetReadDeadline(c.readDL)
	c.tc.SetWriteDeadline(c.writeDL)
}

// earlier returns the earlier of the non-zero times a and b.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// setup runs once, on the first Read: the handshake, then the Fresh
// exchange if the client starts with its magic. Called with rdMu held.
func (c *AttestedConn) setup() error {
	if c.setupDone {
		return c.setupErr
	}
	c.setupDone = true
	if err := c.handshake(context.Background()); err != nil {
		c.setupErr = err
		return err
	}
	c.dlMu.Lock()
	appDL := c.readDL
	c.dlMu.Unlock()
	c.tc.SetReadDeadline(earlier(appDL, time.Now().Add(c.l.cfg.FirstByteTimeout)))
	isFresh, pending, err := readFreshPrefix(c.tc, func() {
		c.tc.SetReadDeadline(earlier(appDL, time.Now().Add(c.l.cfg.HandshakeTimeout)))
	})
	c.pending = pending
	if ve, ok := errors.AsType[*freshVersionError](err); ok {
		c.writeFresh(attest.AppendFreshResponse(nil, attest.FreshStatusError, []byte(ve.Error())))
	}
	if err == nil && isFresh {
		err = c.serveFresh()
	}
	c.restoreDeadlines()
	if err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && !errors.Is(err, ErrAttestedTLS) {
			// Not one byte arrived before the deadline (errors after the
			// first byte wrap ErrAttestedTLS): like a plain read timeout,
			// a later Read may try again.
			c.setupDone = false
			return err
		}
		c.setupErr = err
	}
	return err
}

// readFreshPrefix reads the first bytes of the session from r. If they are
// the Fresh request (attest.FreshRequest) it consumes them and returns
// true. Otherwise it returns false and the bytes it read, which belong to
// the application: at most len(attest.FreshMagic) bytes, and only one
// unless the first is 0xff. started is called after the first byte, to
// switch from the first-byte deadline to the exchange's. An unsupported
// version is an error.
func readFreshPrefix(r io.Reader, started func()) (bool, []byte, error) {
	var b [1]byte
	var got []byte
	for i := range len(attest.FreshMagic) {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				// The peer closed after some bytes: they are its data.
				return false, got, nil
			}
			if i > 0 {
				return false, nil, fmt.Errorf("%w: reading the Fresh request: %w", ErrAttestedTLS, err)
			}
			return false, nil, err
		}
		got = append(got, b[0])
		if i == 0 && started != nil {
			started()
		}
		if b[0] != attest.FreshMagic[i] {
			return false, got, nil
		}
	}
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return true, nil, fmt.Errorf("%w: reading the Fresh request version: %w", ErrAttestedTLS, io.ErrUnexpectedEOF)
	}
	if b[0] != attest.FreshVersion {
		return true, nil, &freshVersionError{v: b[0]}
	}
	return true, nil, nil
}

type freshVersionError struct{ v byte }

func (e *freshVersionError) Error() string {
	return fmt.Sprintf("enclave: attested TLS: Fresh request version %d, want %d", e.v, attest.FreshVersion)
}

func (e *freshVersionError) Unwrap() error { return ErrAttestedTLS }

// serveFresh answers a Fresh request: a document whose nonce is the
// session's exporter value and whose public_key is the listener's key.
func (c *AttestedConn) serveFresh() error {
	c.fresh.Store(true)
	cs := c.tc.ConnectionState()
	nonce, err := cs.ExportKeyingMaterial(attest.ExporterLabel, nil, attest.ExporterSize)
	var doc []byte
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.l.cfg.HandshakeTimeout)
		doc, err = c.l.att.Attest(ctx, attest.Request{Nonce: nonce, PublicKey: c.l.spki})
		cancel()
	}
	if err == nil && (len(doc) == 0 || len(doc) > attest.MaxDocumentSize) {
		err = fmt.Errorf("the attester returned a %d-byte document (want 1..%d)", len(doc), attest.MaxDocumentSize)
	}
	var resp []byte
	if err != nil {
		c.l.log.Warn("attested TLS: Fresh attestation failed", "remote", c.RemoteAddr(), "err", err)
		resp = attest.AppendFreshResponse(nil, attest.FreshStatusError, []byte("attestation unavailable"))
	} else {
		resp = attest.AppendFreshResponse(nil, attest.FreshStatusOK, doc)
	}
	werr := c.writeFresh(resp)
	if err != nil {
		return fmt.Errorf("%w: Fresh attestation: %w", ErrAttestedTLS, err)
	}
	if werr != nil {
		return fmt.Errorf("%w: writing the Fresh answer: %w", ErrAttestedTLS, werr)
	}
	return nil
}

// writeFresh writes a Fresh response, bounded by HandshakeTimeout.
func (c *AttestedConn) writeFresh(resp []byte) error {
	c.wrMu.Lock()
	defer c.wrMu.Unlock()
	c.dlMu.Lock()
	c.tc.SetWriteDeadline(earlier(c.writeDL, time.Now().Add(c.l.cfg.HandshakeTimeout)))
	c.dlMu.Unlock()
	_, err := c.tc.Write(resp)
	return err
}

// Read reads application data. The first Read completes the handshake and
// serves a Fresh request if the client sent one.
func (c *AttestedConn) Read(p []byte) (int, error) {
	c.rdMu.Lock()
	defer c.rdMu.Unlock()
	if err := c.setup(); err != nil {
		return 0, err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.tc.Read(p)
}

// Write writes application data, after the handshake.
func (c *AttestedConn) Write(p []byte) (int, error) {
	if err := c.handshake(context.Background()); err != nil {
		return 0, err
	}
	c.wrMu.Lock()
	defer c.wrMu.Unlock()
	return c.tc.Write(p)
}

// Close closes the connection (sending a TLS close_notify if the
// handshake completed).
func (c *AttestedConn) Close() error { return c.tc.Close() }

// CloseWrite half-closes the connection after the handshake.
func (c *AttestedConn) CloseWrite() error { return c.tc.CloseWrite() }

// LocalAddr returns the local address.
func (c *AttestedConn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr returns the peer's address (as the inner listener reports it).
func (c *AttestedConn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *AttestedConn) SetDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.readDL, c.writeDL = t, t
	return c.tc.SetDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *AttestedConn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.readDL = t
	return c.tc.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *AttestedConn) SetWriteDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.writeDL = t
	return c.tc.SetWriteDeadline(t)
}

// ConnectionState returns the TLS state (after the handshake).
func (c *AttestedConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// NetConn returns the connection under TLS.
func (c *AttestedConn) NetConn() net.Conn { return c.tc.NetConn() }

// FreshServed reports whether the client asked for, and got, a Fresh
// document on this connection.
func (c *AttestedConn) FreshServed() bool { return c.fresh.Load() }
