package kmstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/enclavekit/enclave/kms/internal/awsid"
)

// Test credentials the emulator accepts by default. They are not secret:
// they open nothing but an emulator.
const (
	DefaultAccessKeyID     = "AKIDKMSEMULATOR00000"
	DefaultSecretAccessKey = "kmstest/test/secret/key/not/a/real/one/00"
	DefaultRegion          = "us-east-1"
	DefaultAccount         = "111122223333"
)

// Limits the emulator enforces, as KMS documents them.
const (
	// MaxBodyBytes bounds a request body. KMS requests are small (a 4 KiB
	// plaintext, a 6 KiB ciphertext, a base64 attestation document).
	MaxBodyBytes = 256 << 10
	// MaxPlaintext is KMS's limit for Encrypt's Plaintext.
	MaxPlaintext = 4096
	// MaxRandomBytes is KMS's limit for GenerateRandom and
	// GenerateDataKey's NumberOfBytes.
	MaxRandomBytes = 1024
	// MaxRequestSkew is how far X-Amz-Date may be from the emulator's clock,
	// as for SigV4 at AWS.
	MaxRequestSkew = 15 * time.Minute
	// DefaultDocumentMaxAge bounds the age of a Recipient attestation document.
	DefaultDocumentMaxAge = 5 * time.Minute
)

// Options configure a Server. The zero value is valid: default region,
// account and test credentials, and Recipient requests refused (no
// attestation roots); every zero field takes the default documented on it.
type Options struct {
	// Region is the emulated region, checked in the SigV4 credential scope
	// and put in key ARNs and the TLS certificate's name
	// kms.<Region>.amazonaws.com. "" means DefaultRegion.
	Region string

	// Account is the account ID in key ARNs. "" means DefaultAccount.
	Account string

	// Credentials are the only credentials accepted (SigV4 is recomputed
	// with them). Zero means DefaultAccessKeyID / DefaultSecretAccessKey. A
	// SessionToken, when set, must be sent as X-Amz-Security-Token. When
	// CanExpire is set, requests from Expires on are refused with
	// ExpiredTokenException. Server.SetCredentials replaces them.
	Credentials aws.Credentials

	// AttestationRoots are the trust anchors for Recipient attestation
	// documents (nsmtest.Emulator.Roots in tests). Nil refuses every
	// Recipient: the emulator never trusts the AWS root by default.
	AttestationRoots *x509.CertPool

	// DocumentMaxAge bounds the age of a Recipient document at the
	// emulator's clock. 0 means DefaultDocumentMaxAge (5m).
	DocumentMaxAge time.Duration

	// Now is the emulator's clock. nil means time.Now.
	Now func() time.Time

	// Logger receives one line per request (operation, status, error code;
	// never a body). nil discards them.
	Logger *slog.Logger
}

// ErrConfig is wrapped by every configuration error of the package: those
// of Options.Validate, and so of New and NewServer.
var ErrConfig = errors.New("kmstest: bad configuration")

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o Options) Validate() error {
	if o.Region != "" && !awsid.Region(o.Region) {
		return fmt.Errorf("%w: Options.Region is %q, not a region name", ErrConfig, o.Region)
	}
	if o.Account != "" && !awsid.Account(o.Account) {
		return fmt.Errorf("%w: Options.Account is %q, not 12 digits", ErrConfig, o.Account)
	}
	if (o.Credentials.AccessKeyID == "") != (o.Credentials.SecretAccessKey == "") {
		return fmt.Errorf("%w: Options.Credentials needs both AccessKeyID and SecretAccessKey, or neither", ErrConfig)
	}
	if o.DocumentMaxAge < 0 {
		return fmt.Errorf("%w: Options.DocumentMaxAge is %v, negative (0 means the default, %v)", ErrConfig, o.DocumentMaxAge, DefaultDocumentMaxAge)
	}
	return nil
}

// Exchange is one request the emulator answered, kept for tests that assert
// what crossed the wire (for example that a Recipient response carries no
// Plaintext). Bodies are copies.
type Exchange struct {
	Operation string
	Status    int
	Request   []byte
	Response  []byte
}

// Server is a running KMS emulator: an HTTPS server on a loopback port. It
// is safe for concurrent use.
type Server struct {
	opts  Options
	srv   *httptest.Server
	cert  *x509.Certificate
	pool  *x509.CertPool
	log   *slog.Logger
	clock func() time.Time

	mu        sync.Mutex
	creds     aws.Credentials
	keys      map[string]*key
	exchanges []Exchange
}

// maxExchanges bounds the recorded exchanges; older ones are dropped.
const maxExchanges = 1024

// New starts an emulator on 127.0.0.1 with a fresh self-signed certificate
// for kms.<region>.amazonaws.com, localhost, 127.0.0.1 and ::1.
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.Account == "" {
		opts.Account = DefaultAccount
	}
	if opts.Credentials.AccessKeyID == "" {
		opts.Credentials = aws.Credentials{AccessKeyID: DefaultAccessKeyID, SecretAccessKey: DefaultSecretAccessKey}
	}
	if opts.DocumentMaxAge == 0 {
		opts.DocumentMaxAge = DefaultDocumentMaxAge
	}
	s := &Server{opts: opts, keys: map[string]*key{}, clock: opts.Now, log: opts.Logger, creds: opts.Credentials}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tlsCert, cert, err := selfSigned(s.Hostname(), s.clock())
	if err != nil {
		return nil, fmt.Errorf("kmstest: certificate: %w", err)
	}
	s.cert = cert
	s.pool = x509.NewCertPool()
	s.pool.AddCert(cert)

	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{tlsCert}, MinVersion: tls.VersionTLS12}
	s.srv.Config.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.srv.Config.ReadHeaderTimeout = 10 * time.Second
	s.srv.StartTLS()
	return s, nil
}

// selfSigned makes an ECDSA P-256 certificate for the emulator's names.
func selfSigned(host string, now time.Time) (tls.Certificate, *x509.Certificate, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"enclavekit kmstest (testing only)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{host, "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: cert}, cert, nil
}

// Close stops the server and waits for requests in flight.
func (s *Server) Close() { s.srv.Close() }

// URL is the emulator's base URL, https://127.0.0.1:PORT, for an SDK
// client's BaseEndpoint.
func (s *Server) URL() string { return s.srv.URL }

// Addr is the emulator's host:port (127.0.0.1:PORT), the destination of a
// proxy route.
func (s *Server) Addr() string { return strings.TrimPrefix(s.srv.URL, "https://") }

// Region is the emulated region.
func (s *Server) Region() string { return s.opts.Region }

// Account is the emulated account ID in key ARNs.
func (s *Server) Account() string { return s.opts.Account }

// Hostname is kms.<region>.amazonaws.com, a name the emulator's certificate
// carries, so a client using the region's real endpoint verifies it.
func (s *Server) Hostname() string { return "kms." + s.opts.Region + ".amazonaws.com" }

// Certificate is the emulator's self-signed TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.cert }

// CertPool holds only the emulator's certificate, for a client's RootCAs.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// HTTPClient is an HTTP client that trusts the emulator and dials it
// directly (the "parent side" of tests).
func (s *Server) HTTPClient() *http.Client { return s.srv.Client() }

// Credentials returns a provider of the credentials the emulator accepts
// at the time of each Retrieve.
func (s *Server) Credentials() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return s.credentials(), nil })
}

// SetCredentials replaces the only credentials the emulator accepts, as
// when the instance role's credentials rotate: requests signed with the
// old ones are refused from now on. When c.CanExpire, requests are refused
// with ExpiredTokenException from c.Expires on (at the emulator's clock).
func (s *Server) SetCredentials(c aws.Credentials) error {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return errors.New("kmstest: SetCredentials needs an AccessKeyID and a SecretAccessKey")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = c
	return nil
}

func (s *Server) credentials() aws.Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// Exchanges returns copies of the recorded request/response pairs, oldest
// first (at most the last 1024).
func (s *Server) Exchanges() []Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Exchange(nil), s.exchanges...)
}

func (s *Server) record(e Exchange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.exchanges) == maxExchanges {
		s.exchanges = append(s.exchanges[:0], s.exchanges[1:]...)
	}
	s.exchanges = append(s.exchanges, e)
}

// Target prefix and content type of the KMS JSON 1.1 protocol.
const (
	targetPrefix = "TrentService."
	contentType  = "application/x-amz-json-1.1"
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)
	body, resp, aerr := s.handle(r, op)
	status := http.StatusOK
	if aerr != nil {
		status = aerr.status()
		resp = aerr.body()
	}
	rid := newRequestID()
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Amzn-RequestId", rid)
	w.WriteHeader(status)
	_, _ = w.Write(resp)
	s.record(Exchange{Operation: op, Status: status, Request: body, Response: append([]byte(nil), resp...)})
	attrs := []any{"op", op, "status", status, "request_id", rid, "took", time.Since(start)}
	if aerr != nil {
		attrs = append(attrs, "error", aerr.Type, "message", aerr.Message)
	}
	s.log.Info("kmstest: request", attrs...)
}

// handle authenticates, decodes and runs one request; it returns the request
// body as read (for the record) and the response body, or an error.
func (s *Server) handle(r *http.Request, op string) ([]byte, []byte, *apiError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return nil, nil, errf(errUnknownOperation, "only POST / is served")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		return nil, nil, errf(errSerialization, "request body unreadable or over %d bytes", MaxBodyBytes)
	}
	if aerr := s.authenticate(r, body); aerr != nil {
		return body, nil, aerr
	}
	if ct := r.Header.Get("Content-Type"); ct != contentType {
		return body, nil, errf(errSerialization, "Content-Type %q, want %s", ct, contentType)
	}
	h, ok := operations[op]
	if !ok || !strings.HasPrefix(r.Header.Get("X-Amz-Target"), targetPrefix) {
		return body, nil, errf(errUnknownOperation, "operation %q is not emulated", r.Header.Get("X-Amz-Target"))
	}
	out, aerr := h(s, body)
	if aerr != nil {
		return body, nil, aerr
	}
	resp, err := json.Marshal(out)
	if err != nil {
		return body, nil, errf(errInternal, "encoding the response: %v", err)
	}
	return body, resp, nil
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// keyARN returns the ARN of key id.
func (s *Server) keyARN(id string) string {
	return "arn:aws:kms:" + s.opts.Region + ":" + s.opts.Account + ":key/" + id
}

// lookup resolves a KeyId (key ID or key ARN; aliases are not emulated).
func (s *Server) lookup(keyID string) (*key, *apiError) {
	if keyID == "" {
		return nil, errf(errValidation, "KeyId is required")
	}
	id := keyID
	if strings.HasPrefix(keyID, "arn:") {
		prefix := "arn:aws:kms:" + s.opts.Region + ":" + s.opts.Account + ":key/"
		if !strings.HasPrefix(keyID, prefix) {
			return nil, errf(errNotFound, "Invalid arn %s", keyID)
		}
		id = strings.TrimPrefix(keyID, prefix)
	} else if strings.HasPrefix(keyID, "alias/") {
		return nil, errf(errNotFound, "Alias %s is not found (aliases are not emulated)", keyID)
	}
	s.mu.Lock()
	k := s.keys[id]
	s.mu.Unlock()
	if k == nil {
		return nil, errf(errNotFound, "Key '%s' does not exist", s.keyARN(id))
	}
	return k, nil
}
