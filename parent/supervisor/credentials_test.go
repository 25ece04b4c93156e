package supervisor

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/parent/imdstest"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

func TestCredentialsConfig(t *testing.T) {
	cfg, err := ParseConfig("run.yaml", []byte(oneEnclave+"credentials:\n  role: app\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Credentials == nil || cfg.Credentials.Role != "app" || cfg.Credentials.Interval != time.Minute {
		t.Fatalf("credentials = %+v", cfg.Credentials)
	}
	_, err = ParseConfig("run.yaml", []byte(oneEnclave+"credentials:\n  interval: -1s\n"))
	if err == nil || !strings.Contains(err.Error(), "credentials.interval") || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("negative interval: %v", err)
	}
}

// TestPushCredentials: the push waits for an enclave that is not up yet,
// then delivers the role's credentials from IMDSv2.
func TestPushCredentials(t *testing.T) {
	imdsSrv := imdstest.NewServer(t, imdstest.Options{})
	ln, err := transport.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := transport.AddrOf(ln.Addr())
	ln.Close() // nothing listens until the enclave starts below

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pushCredentials(ctx, addr, credentialSource(&Credentials{IMDSEndpoint: imdsSrv.URL()}), time.Minute, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()

	time.Sleep(1500 * time.Millisecond) // the pusher has failed to dial at least once
	store := kms.NewCredentialStore(kms.CredentialStoreOptions{WaitFirst: -1, Logger: slog.New(slog.DiscardHandler)})
	srv, err := enclave.New(enclave.Config{Addr: addr, Dev: true, SysFS: fstest.MapFS{}, Logger: slog.New(slog.DiscardHandler), DrainTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(protocol.MethodCredentials, store.Handle)
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	defer func() { stop(); <-served }()

	deadline := time.Now().Add(20 * time.Second)
	for store.Status().Pushes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no credentials arrived in the enclave")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, want := store.Status().AccessKeyID, imdsSrv.Credentials().AccessKeyID; got != want {
		t.Fatalf("the enclave holds %s, IMDS serves %s", got, want)
	}
}
