package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/enclavekit/protocol"
)

// Credential errors. Their text never contains a credential.
var (
	// ErrNoCredentials means the parent has not pushed credentials yet.
	ErrNoCredentials = errors.New("kms: no AWS credentials in the enclave: the parent has not pushed any (run `enclavekit credentials push` on the parent)")
	// ErrCredentialsExpired means the last pushed credentials expired and
	// no fresh ones arrived.
	ErrCredentialsExpired = errors.New("kms: the AWS credentials in the enclave have expired: the parent's credential push has stopped")
)

// Limits on pushed credentials.
const (
	// MaxSessionToken bounds a session token (STS tokens are 1–2 KiB).
	MaxSessionToken = 8192
	// DefaultWaitFirst is how long Retrieve waits for a first push.
	DefaultWaitFirst = 10 * time.Second
)

// CredentialStoreOptions configure a CredentialStore. The zero value is
// valid: every zero field takes the default documented on it, and no value
// is invalid, so there is no Validate.
type CredentialStoreOptions struct {
	// WaitFirst is how long Retrieve waits, within its context, for the
	// first credentials when none were pushed yet, so that a call made
	// just after the enclave starts does not race the parent's first
	// push. 0 means DefaultWaitFirst (10s); negative means do not wait.
	WaitFirst time.Duration
	// Logger receives one line per push (access key ID and expiry only).
	// nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock that expiry is checked against. nil means time.Now.
	Now func() time.Time
}

// CredentialStore keeps the AWS credentials the parent pushes (the
// enclavekit.credentials method) in memory and serves them to the AWS SDK
// as an aws.CredentialsProvider. The secret parts are held as
// protocol.Secret and never logged. Register it with
//
//	srv.Handle(protocol.MethodCredentials, store.Handle)
//
// The parent supplies the credentials, so it chooses the account they act
// in: that is why the client pins its key ARNs (Config.Keys) and checks
// every answer's key.
type CredentialStore struct {
	opts  CredentialStoreOptions
	log   *slog.Logger
	now   func() time.Time
	ready chan struct{} // closed at the first push

	mu      sync.RWMutex
	cur     *storedCredentials
	pushes  uint64
	refused uint64
}

type storedCredentials struct {
	accessKeyID string
	secret      protocol.Secret
	token       protocol.Secret
	expires     time.Time // zero: never
	received    time.Time
}

// NewCredentialStore returns an empty store.
func NewCredentialStore(opts CredentialStoreOptions) *CredentialStore {
	if opts.WaitFirst == 0 {
		opts.WaitFirst = DefaultWaitFirst
	}
	s := &CredentialStore{opts: opts, log: opts.Logger, now: opts.Now, ready: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Handle serves enclavekit.credentials: it validates the pushed
// credentials and replaces the stored ones. The request body is wiped.
func (s *CredentialStore) Handle(_ context.Context, body []byte) ([]byte, error) {
	defer protocol.Zero(body)
	var req protocol.CredentialsRequest
	err := protocol.Unmarshal(body, &req)
	defer protocol.Zero(req.SecretAccessKey)
	defer protocol.Zero(req.SessionToken)
	if err != nil {
		s.refuse()
		// The decoder's message may quote bytes of the body: drop it.
		return nil, fmt.Errorf("%w: enclavekit.credentials: the body is not a credentials request", protocol.ErrBadRequest)
	}
	if err := s.set(req); err != nil {
		s.refuse()
		return nil, fmt.Errorf("%w: enclavekit.credentials: %w", protocol.ErrBadRequest, err)
	}
	return nil, nil
}

func (s *CredentialStore) refuse() {
	s.mu.Lock()
	s.refused++
	s.mu.Unlock()
}

// Set stores credentials directly, for an enclave that gets them some
// other way, and for tests.
func (s *CredentialStore) Set(c aws.Credentials) error {
	req := protocol.CredentialsRequest{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: []byte(c.SecretAccessKey), SessionToken: []byte(c.SessionToken),
	}
	if c.CanExpire {
		req.ExpiresUnix = c.Expires.Unix()
	}
	defer protocol.Zero(req.SecretAccessKey)
	defer protocol.Zero(req.SessionToken)
	return s.set(req)
}

func (s *CredentialStore) set(req protocol.CredentialsRequest) error {
	if !validAccessKeyID(req.AccessKeyID) {
		return errors.New("access key ID is not 16 to 128 upper-case letters and digits")
	}
	if len(req.SecretAccessKey) == 0 || len(req.SecretAccessKey) > 128 || !printable(req.SecretAccessKey) {
		return errors.New("secret access key is empty, over 128 bytes or not printable ASCII")
	}
	if len(req.SessionToken) > MaxSessionToken || !printable(req.SessionToken) {
		return fmt.Errorf("session token is over %d bytes or not printable ASCII", MaxSessionToken)
	}
	now := s.now()
	var expires time.Time
	if req.ExpiresUnix != 0 {
		expires = time.Unix(req.ExpiresUnix, 0)
		if !expires.After(now) {
			return fmt.Errorf("credentials %s expired at %s (enclave clock %s)", req.AccessKeyID, expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	c := &storedCredentials{
		accessKeyID: req.AccessKeyID,
		secret:      protocol.NewSecret(req.SecretAccessKey),
		token:       protocol.NewSecret(req.SessionToken),
		expires:     expires,
		received:    now,
	}
	s.mu.Lock()
	first := s.cur == nil
	changed := first || s.cur.accessKeyID != c.accessKeyID || !s.cur.expires.Equal(c.expires)
	s.cur = c
	s.pushes++
	s.mu.Unlock()
	if first {
		close(s.ready)
	}
	if changed {
		attrs := []any{"access_key_id", c.accessKeyID}
		if !expires.IsZero() {
			attrs = append(attrs, "expires", expires.UTC().Format(time.RFC3339))
		}
		s.log.Info("kms: AWS credentials received", attrs...)
	}
	return nil
}

// Retrieve implements aws.CredentialsProvider. With no credentials yet it
// waits up to WaitFirst (within ctx) for the parent's first push.
func (s *CredentialStore) Retrieve(ctx context.Context) (aws.Credentials, error) {
	s.mu.RLock()
	c := s.cur
	s.mu.RUnlock()
	if c == nil && s.opts.WaitFirst > 0 {
		t := time.NewTimer(s.opts.WaitFirst)
		select {
		case <-s.ready:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		s.mu.RLock()
		c = s.cur
		s.mu.RUnlock()
	}
	if c == nil {
		return aws.Credentials{}, ErrNoCredentials
	}
	if !c.expires.IsZero() && !c.expires.After(s.now()) {
		return aws.Credentials{}, fmt.Errorf("%w (%s expired at %s)", ErrCredentialsExpired, c.accessKeyID, c.expires.UTC().Format(time.RFC3339))
	}
	return aws.Credentials{
		AccessKeyID:     c.accessKeyID,
		SecretAccessKey: string(c.secret.Bytes()),
		SessionToken:    string(c.token.Bytes()),
		Source:          "enclavekit parent push",
		CanExpire:       !c.expires.IsZero(),
		Expires:         c.expires,
	}, nil
}

// CredentialStatus describes the stored credentials without their secrets.
type CredentialStatus struct {
	AccessKeyID string    // empty when none were pushed
	Expires     time.Time // zero when they do not expire
	Received    time.Time // the last push
	Pushes      uint64    // accepted pushes
	Refused     uint64    // refused pushes
}

// Status reports the stored credentials' public parts.
func (s *CredentialStore) Status() CredentialStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := CredentialStatus{Pushes: s.pushes, Refused: s.refused}
	if s.cur != nil {
		st.AccessKeyID, st.Expires, st.Received = s.cur.accessKeyID, s.cur.expires, s.cur.received
	}
	return st
}

func validAccessKeyID(s string) bool {
	if len(s) < 16 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
