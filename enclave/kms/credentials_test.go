package kms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/enclavekit/protocol"
)

const (
	testAKID   = "ASIAEXAMPLEEXAMPLE00"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
	testToken  = "IQoJb3JpZ2luX2VjEXAMPLETOKEN"
)

func pushBody(t *testing.T, r protocol.CredentialsRequest) []byte {
	t.Helper()
	b, err := protocol.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCredentialStorePush(t *testing.T) {
	var logs bytes.Buffer
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := NewCredentialStore(CredentialStoreOptions{WaitFirst: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }})
	ctx := context.Background()
	if _, err := s.Retrieve(ctx); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("empty store: %v", err)
	}
	body := pushBody(t, protocol.CredentialsRequest{AccessKeyID: testAKID, SecretAccessKey: []byte(testSecret), SessionToken: []byte(testToken), ExpiresUnix: now.Add(time.Hour).Unix()})
	if _, err := s.Handle(ctx, body); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, make([]byte, len(body))) {
		t.Error("the request body was not wiped")
	}
	c, err := s.Retrieve(ctx)
	if err != nil || c.AccessKeyID != testAKID || c.SecretAccessKey != testSecret || c.SessionToken != testToken || !c.CanExpire {
		t.Fatalf("Retrieve = %+v, %v", c.AccessKeyID, err)
	}
	if st := s.Status(); st.AccessKeyID != testAKID || st.Pushes != 1 || !st.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("Status = %+v", st)
	}
	now = now.Add(2 * time.Hour)
	if _, err := s.Retrieve(ctx); !errors.Is(err, ErrCredentialsExpired) {
		t.Fatalf("expired: %v", err)
	}
	if strings.Contains(logs.String(), testSecret) || strings.Contains(logs.String(), testToken) {
		t.Fatalf("a secret reached the log: %s", logs.String())
	}
	if got := fmt.Sprintf("%v %+v %#v %s", s.cur, *s.cur, s.cur.secret, s.cur.token); strings.Contains(got, testSecret) || strings.Contains(got, testToken) {
		t.Fatalf("stored credentials print their secrets: %s", got)
	}
}

func TestCredentialStoreRefuses(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	good := protocol.CredentialsRequest{AccessKeyID: testAKID, SecretAccessKey: []byte(testSecret), SessionToken: []byte(testToken), ExpiresUnix: now.Add(time.Hour).Unix()}
	for _, tc := range []struct {
		name   string
		body   func() []byte
		reason string
	}{
		{"not CBOR", func() []byte { return []byte("AKIA" + testSecret) }, "not a credentials request"},
		{"unknown field", func() []byte {
			b, _ := protocol.Marshal(map[int]any{1: testAKID, 2: []byte(testSecret), 9: 1})
			return b
		}, "not a credentials request"},
		{"short key id", func() []byte { r := good; r.AccessKeyID = "AKIA"; return pushBody(t, r) }, "access key ID"},
		{"lower-case key id", func() []byte { r := good; r.AccessKeyID = strings.ToLower(testAKID); return pushBody(t, r) }, "access key ID"},
		{"no secret", func() []byte { r := good; r.SecretAccessKey = nil; return pushBody(t, r) }, "secret access key"},
		{"control bytes in secret", func() []byte { r := good; r.SecretAccessKey = []byte("a\nb"); return pushBody(t, r) }, "secret access key"},
		{"huge token", func() []byte {
			r := good
			r.SessionToken = bytes.Repeat([]byte("a"), MaxSessionToken+1)
			return pushBody(t, r)
		}, "session token"},
		{"expired", func() []byte { r := good; r.ExpiresUnix = now.Add(-time.Second).Unix(); return pushBody(t, r) }, "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCredentialStore(CredentialStoreOptions{WaitFirst: -1, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
			_, err := s.Handle(context.Background(), tc.body())
			if !errors.Is(err, protocol.ErrBadRequest) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Handle = %v, want a bad request naming %q", err, tc.reason)
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), testToken) {
				t.Fatalf("the error carries a secret: %v", err)
			}
			if st := s.Status(); st.Refused != 1 || st.AccessKeyID != "" {
				t.Fatalf("Status = %+v", st)
			}
		})
	}
}

// TestCredentialStoreWaitsForFirstPush: a call made just after the enclave
// starts waits for the parent's first push, up to WaitFirst.
func TestCredentialStoreWaitsForFirstPush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewCredentialStore(CredentialStoreOptions{Logger: slog.New(slog.DiscardHandler)})
		go func() {
			time.Sleep(3 * time.Second)
			_ = s.Set(aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret})
		}()
		start := time.Now()
		c, err := s.Retrieve(context.Background())
		if err != nil || c.AccessKeyID != testAKID || time.Since(start) != 3*time.Second {
			t.Fatalf("Retrieve = %v after %v", err, time.Since(start))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		s := NewCredentialStore(CredentialStoreOptions{Logger: slog.New(slog.DiscardHandler)})
		start := time.Now()
		if _, err := s.Retrieve(context.Background()); !errors.Is(err, ErrNoCredentials) || time.Since(start) != DefaultWaitFirst {
			t.Fatalf("Retrieve = %v after %v, want ErrNoCredentials after %v", err, time.Since(start), DefaultWaitFirst)
		}
	})
}

func FuzzCredentialsHandle(f *testing.F) {
	good, _ := protocol.Marshal(&protocol.CredentialsRequest{AccessKeyID: testAKID, SecretAccessKey: []byte(testSecret)})
	f.Add(good)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewCredentialStore(CredentialStoreOptions{WaitFirst: -1, Logger: slog.New(slog.DiscardHandler)})
		if _, err := s.Handle(context.Background(), bytes.Clone(b)); err != nil {
			if !errors.Is(err, protocol.ErrBadRequest) {
				t.Fatalf("error %v is not a bad request", err)
			}
			return
		}
		if _, err := s.Retrieve(context.Background()); err != nil {
			t.Fatalf("accepted push, then Retrieve: %v", err)
		}
	})
}
