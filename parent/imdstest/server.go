package imdstest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Header names of the IMDSv2 session protocol.
const (
	HeaderToken    = "X-aws-ec2-metadata-token"
	HeaderTokenTTL = "X-aws-ec2-metadata-token-ttl-seconds"
)

// Defaults and limits.
const (
	DefaultRole               = "enclavekit-test-role"
	DefaultRegion             = "us-east-1"
	DefaultAccountID          = "111122223333"
	DefaultInstanceID         = "i-0123456789abcdef0"
	DefaultInstanceType       = "m5.xlarge"
	DefaultCredentialLifetime = 6 * time.Hour
	// MaxTokenTTL is the longest session token IMDS issues, in seconds.
	MaxTokenTTL = 21600
	// maxTokens bounds the live tokens kept; expired ones are dropped first.
	maxTokens = 4096
	// maxRequests bounds the request log; older entries are dropped.
	maxRequests = 1024
)

// Credentials are the instance role's temporary credentials.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	Token           string
	Expiration      time.Time
}

// String names the access key and the expiration only.
func (c Credentials) String() string {
	return fmt.Sprintf("credentials %s (expire %s)", c.AccessKeyID, c.Expiration.UTC().Format(time.RFC3339))
}

// Options configure a Server. The zero value is valid: every zero field
// takes the default documented on it.
type Options struct {
	// Role is the instance profile's role name. "" means DefaultRole.
	Role string
	// Region is the instance's region. "" means DefaultRegion.
	Region string
	// AvailabilityZone is the instance's zone; "" means Region + "a".
	AvailabilityZone string
	// AccountID is the 12-digit account. "" means DefaultAccountID.
	AccountID string
	// InstanceID is the instance's ID; "" means DefaultInstanceID.
	InstanceID string
	// InstanceType is the instance's type; "" means DefaultInstanceType.
	InstanceType string
	// Credentials are served first. Zero: random ones that expire after
	// CredentialLifetime.
	Credentials Credentials
	// CredentialLifetime is how long generated credentials last. 0 means
	// DefaultCredentialLifetime (6h).
	CredentialLifetime time.Duration
	// Now is the server's clock (token expiry, LastUpdated). nil means
	// time.Now.
	Now func() time.Time
}

// ErrConfig is wrapped by every configuration error of the package: those
// of Options.Validate, and so of New and NewServer.
var ErrConfig = errors.New("imdstest: bad configuration")

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o Options) Validate() error {
	if o.Role != "" && (len(o.Role) > 64 || strings.ContainsAny(o.Role, "/ \t\r\n")) {
		return fmt.Errorf("%w: Options.Role is %q, not a role name (1 to 64 characters, no slash or space)", ErrConfig, o.Role)
	}
	if o.Region != "" && !validName(o.Region) {
		return fmt.Errorf("%w: Options.Region is %q, not a region name", ErrConfig, o.Region)
	}
	if o.AvailabilityZone != "" && !validName(o.AvailabilityZone) {
		return fmt.Errorf("%w: Options.AvailabilityZone is %q, not a zone name", ErrConfig, o.AvailabilityZone)
	}
	if o.AccountID != "" && (len(o.AccountID) != 12 || strings.Trim(o.AccountID, "0123456789") != "") {
		return fmt.Errorf("%w: Options.AccountID is %q, not 12 digits", ErrConfig, o.AccountID)
	}
	c := o.Credentials
	if c != (Credentials{}) && (c.AccessKeyID == "" || c.SecretAccessKey == "" || c.Expiration.IsZero()) {
		return fmt.Errorf("%w: Options.Credentials needs AccessKeyID, SecretAccessKey and Expiration, or none of them", ErrConfig)
	}
	if o.CredentialLifetime < 0 {
		return fmt.Errorf("%w: Options.CredentialLifetime is %v, negative (0 means the default, %v)", ErrConfig, o.CredentialLifetime, DefaultCredentialLifetime)
	}
	return nil
}

func validName(s string) bool {
	if len(s) < 4 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Request is one entry of the request log. It holds no token and no
// credential.
type Request struct {
	Time   time.Time
	Method string
	Path   string
	// Status is the HTTP status answered.
	Status int
	// HadToken reports whether the request carried a session token header
	// (valid or not).
	HadToken bool
}

// Server is a running IMDSv2 emulator. It is safe for concurrent use.
type Server struct {
	opts  Options
	srv   *httptest.Server
	clock func() time.Time
	// profileID is the instance profile's ID in iam/info.
	profileID string

	mu          sync.Mutex
	creds       Credentials
	lastUpdated time.Time
	tokens      map[string]time.Time // token → expiry
	requests    []Request
}

// New starts an emulator on 127.0.0.1.
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Role == "" {
		opts.Role = DefaultRole
	}
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.AvailabilityZone == "" {
		opts.AvailabilityZone = opts.Region + "a"
	}
	if opts.AccountID == "" {
		opts.AccountID = DefaultAccountID
	}
	if opts.InstanceID == "" {
		opts.InstanceID = DefaultInstanceID
	}
	if opts.InstanceType == "" {
		opts.InstanceType = DefaultInstanceType
	}
	if opts.CredentialLifetime == 0 {
		opts.CredentialLifetime = DefaultCredentialLifetime
	}
	s := &Server{opts: opts, clock: opts.Now, tokens: map[string]time.Time{},
		profileID: "AIPA" + randomString(17, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")}
	if s.clock == nil {
		s.clock = time.Now
	}
	s.lastUpdated = s.clock().UTC()
	if opts.Credentials != (Credentials{}) {
		s.creds = opts.Credentials
	} else {
		s.creds = s.newCredentials()
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Config.ReadHeaderTimeout = 10 * time.Second
	s.srv.Start()
	return s, nil
}

// NewServer starts an emulator for the test t and closes it when the test
// ends; it fails the test if opts are not valid.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for requests in flight.
func (s *Server) Close() { s.srv.Close() }

// URL is the base URL, http://127.0.0.1:PORT, for imds.Options.Endpoint.
func (s *Server) URL() string { return s.srv.URL }

// Addr is the server's host:port.
func (s *Server) Addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// Role is the role name served.
func (s *Server) Role() string { return s.opts.Role }

// Region is the instance's region.
func (s *Server) Region() string { return s.opts.Region }

// Credentials returns the credentials currently served.
func (s *Server) Credentials() Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// SetCredentials replaces the credentials served. It panics if c lacks an
// AccessKeyID, SecretAccessKey or Expiration.
func (s *Server) SetCredentials(c Credentials) {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.Expiration.IsZero() {
		panic("imdstest: SetCredentials needs AccessKeyID, SecretAccessKey and Expiration")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = c
	s.lastUpdated = s.clock().UTC()
}

// Rotate replaces the credentials with fresh random ones that expire after
// Options.CredentialLifetime, and returns them, as IMDS does ahead of
// expiry.
func (s *Server) Rotate() Credentials {
	c := s.newCredentials()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = c
	s.lastUpdated = s.clock().UTC()
	return c
}

// SetExpiration changes the expiration of the credentials served (in the
// past, to test a consumer's handling of expired credentials).
func (s *Server) SetExpiration(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds.Expiration = t
}

// ExpireTokens invalidates every session token issued so far; the next GET
// with one of them is answered 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Requests returns a copy of the request log, oldest first (at most the
// last 1024).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) newCredentials() Credentials {
	return Credentials{
		AccessKeyID:     "ASIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
		SecretAccessKey: randomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
		Token:           "IQoJb3JpZ2luX2VjE" + base64.StdEncoding.EncodeToString(randomBytes(300)),
		Expiration:      s.clock().UTC().Add(s.opts.CredentialLifetime).Truncate(time.Second),
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomString(n int, alphabet string) string {
	b := randomBytes(n)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// ServeHTTP answers one IMDS request. A Server is also an http.Handler, to
// mount on another test server.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := s.serve(w, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == maxRequests {
		s.requests = append(s.requests[:0], s.requests[1:]...)
	}
	s.requests = append(s.requests, Request{
		Time: s.clock(), Method: r.Method, Path: r.URL.Path, Status: status, HadToken: r.Header.Get(HeaderToken) != "",
	})
}

const tokenPath = "/latest/api/token"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path == tokenPath {
		if r.Method != http.MethodPut {
			return fail(w, http.StatusMethodNotAllowed)
		}
		return s.putToken(w, r)
	}
	if r.Method != http.MethodGet {
		return fail(w, http.StatusMethodNotAllowed)
	}
	if !s.validToken(r.Header.Get(HeaderToken)) {
		return fail(w, http.StatusUnauthorized)
	}
	body, ctype, ok := s.lookup(r.URL.Path)
	if !ok {
		return fail(w, http.StatusNotFound)
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return http.StatusOK
}

// fail answers status with IMDS's short plain-text body.
func fail(w http.ResponseWriter, status int) int {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(http.StatusText(status)))
	return status
}

func (s *Server) putToken(w http.ResponseWriter, r *http.Request) int {
	if r.Header.Get("X-Forwarded-For") != "" {
		return fail(w, http.StatusForbidden)
	}
	vs := r.Header.Values(HeaderTokenTTL)
	if len(vs) != 1 {
		return fail(w, http.StatusBadRequest)
	}
	ttl, err := strconv.Atoi(vs[0])
	if err != nil || ttl < 1 || ttl > MaxTokenTTL || strconv.Itoa(ttl) != vs[0] {
		return fail(w, http.StatusBadRequest)
	}
	tok := base64.StdEncoding.EncodeToString(randomBytes(42))
	now := s.clock()
	s.mu.Lock()
	if len(s.tokens) >= maxTokens {
		for t, exp := range s.tokens {
			if !now.Before(exp) {
				delete(s.tokens, t)
			}
		}
		for t := range s.tokens {
			if len(s.tokens) < maxTokens {
				break
			}
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set(HeaderTokenTTL, vs[0])
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
	return http.StatusOK
}

func (s *Server) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && s.clock().Before(exp)
}

// Shapes of the JSON documents served.
type credentialsDoc struct {
	Code            string `json:"Code"`
	LastUpdated     string `json:"LastUpdated"`
	Type            string `json:"Type"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

type iamInfoDoc struct {
	Code               string `json:"Code"`
	LastUpdated        string `json:"LastUpdated"`
	InstanceProfileArn string `json:"InstanceProfileArn"`
	InstanceProfileID  string `json:"InstanceProfileId"`
}

type identityDoc struct {
	AccountID               string   `json:"accountId"`
	Architecture            string   `json:"architecture"`
	AvailabilityZone        string   `json:"availabilityZone"`
	BillingProducts         []string `json:"billingProducts"`
	DevpayProductCodes      []string `json:"devpayProductCodes"`
	MarketplaceProductCodes []string `json:"marketplaceProductCodes"`
	ImageID                 string   `json:"imageId"`
	InstanceID              string   `json:"instanceId"`
	InstanceType            string   `json:"instanceType"`
	KernelID                *string  `json:"kernelId"`
	PendingTime             string   `json:"pendingTime"`
	PrivateIP               string   `json:"privateIp"`
	RamdiskID               *string  `json:"ramdiskId"`
	Region                  string   `json:"region"`
	Version                 string   `json:"version"`
}

func rfc3339(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

const (
	credsPath = "/latest/meta-data/iam/security-credentials"
	textPlain = "text/plain"
	appJSON   = "application/json"
)

// lookup returns the document at path.
func (s *Server) lookup(path string) ([]byte, string, bool) {
	s.mu.Lock()
	creds, updated := s.creds, s.lastUpdated
	s.mu.Unlock()
	o := s.opts
	switch path {
	case credsPath, credsPath + "/":
		return []byte(o.Role), textPlain, true
	case credsPath + "/" + o.Role:
		return mustJSON(credentialsDoc{
			Code: "Success", LastUpdated: rfc3339(updated), Type: "AWS-HMAC",
			AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, Token: creds.Token,
			Expiration: rfc3339(creds.Expiration),
		}), textPlain, true
	case "/latest/meta-data/iam/info":
		return mustJSON(iamInfoDoc{
			Code: "Success", LastUpdated: rfc3339(updated),
			InstanceProfileArn: "arn:aws:iam::" + o.AccountID + ":instance-profile/" + o.Role,
			InstanceProfileID:  s.profileID,
		}), textPlain, true
	case "/latest/meta-data/placement/region":
		return []byte(o.Region), textPlain, true
	case "/latest/meta-data/placement/availability-zone":
		return []byte(o.AvailabilityZone), textPlain, true
	case "/latest/meta-data/instance-id":
		return []byte(o.InstanceID), textPlain, true
	case "/latest/meta-data/instance-type":
		return []byte(o.InstanceType), textPlain, true
	case "/latest/dynamic/instance-identity/document":
		return mustJSON(identityDoc{
			AccountID: o.AccountID, Architecture: "x86_64", AvailabilityZone: o.AvailabilityZone,
			ImageID: "ami-0123456789abcdef0", InstanceID: o.InstanceID, InstanceType: o.InstanceType,
			PendingTime: rfc3339(updated), PrivateIP: "10.0.0.10", Region: o.Region, Version: "2017-09-30",
		}), appJSON, true
	}
	return nil, "", false
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}
