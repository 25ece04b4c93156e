package parent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/parent/imdstest"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

var testCreds = aws.Credentials{
	AccessKeyID: "ASIAEXAMPLEEXAMPLE00", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
	SessionToken: "IQoJb3JpZ2luX2VjEXAMPLETOKEN", CanExpire: true,
}

func TestPushCredentials(t *testing.T) {
	cfg := enclaveConfig("tcp://127.0.0.1:0")
	store := kms.NewCredentialStore(kms.CredentialStoreOptions{WaitFirst: -1, Logger: quiet})
	srv, err := enclave.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(protocol.MethodCredentials, store.Handle)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	c, err := Dial(context.Background(), transport.AddrOf(srv.Addr()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	creds := testCreds
	creds.Expires = time.Now().Add(time.Hour).Truncate(time.Second)
	if err := c.PushCredentials(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	got, err := store.Retrieve(context.Background())
	if err != nil || got.AccessKeyID != creds.AccessKeyID || got.SecretAccessKey != creds.SecretAccessKey ||
		got.SessionToken != creds.SessionToken || !got.Expires.Equal(creds.Expires) {
		t.Fatalf("the enclave holds %v, %v", got.AccessKeyID, err)
	}
	expired := testCreds
	expired.Expires = time.Now().Add(-time.Minute)
	if err := c.PushCredentials(context.Background(), expired); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("expired credentials: %v, want a bad request", err)
	}
}

// TestRunCredentialPush: pushes at once, then every interval; a failure
// is retried after 1 s, doubling, and the interval resumes after success.
func TestRunCredentialPush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		fail := map[int]bool{1: true, 2: true} // the 2nd and 3rd reads fail
		reads := 0
		src := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			mu.Lock()
			defer mu.Unlock()
			reads++
			if fail[reads-1] {
				return aws.Credentials{}, errors.New("imds down")
			}
			return testCreds, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- runCredentialPush(ctx, CredentialPush{Source: src, Interval: time.Minute, Logger: slog.New(slog.DiscardHandler)},
				func(context.Context, aws.Credentials) error {
					mu.Lock()
					at = append(at, time.Since(start))
					mu.Unlock()
					return nil
				})
		}()
		time.Sleep(3*time.Minute + 30*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// 0: push; 1m: fail; 1m1s: fail; 1m3s: push; 2m3s; 3m3s.
		want := []time.Duration{0, time.Minute + 3*time.Second, 2*time.Minute + 3*time.Second, 3*time.Minute + 3*time.Second}
		if len(at) != len(want) {
			t.Fatalf("pushes at %v, want %v", at, want)
		}
		for i := range want {
			if at[i] != want[i] {
				t.Fatalf("pushes at %v, want %v", at, want)
			}
		}
	})
}

func TestIMDSCredentials(t *testing.T) {
	srv := imdstest.NewServer(t, imdstest.Options{})
	p := &IMDSCredentials{Client: imds.New(imds.Options{Endpoint: srv.URL()})}
	got, err := p.Retrieve(context.Background())
	want := srv.Credentials()
	if err != nil || got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey ||
		got.SessionToken != want.Token || !got.CanExpire || !got.Expires.Equal(want.Expiration) {
		t.Fatalf("Retrieve = %v, %v; want %v", got.AccessKeyID, err, want)
	}
	rotated := srv.Rotate()
	if got, err := p.Retrieve(context.Background()); err != nil || got.AccessKeyID != rotated.AccessKeyID {
		t.Fatalf("after rotation: %v, %v", got.AccessKeyID, err)
	}
	bad := &IMDSCredentials{Client: imds.New(imds.Options{Endpoint: srv.URL()}), Role: "no-such-role"}
	if _, err := bad.Retrieve(context.Background()); !errors.Is(err, ErrIMDS) || !strings.Contains(err.Error(), `role "no-such-role"`) {
		t.Fatalf("unknown role: %v", err)
	}
}
