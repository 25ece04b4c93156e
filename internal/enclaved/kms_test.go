package enclaved

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
)

// TestExampleMethodsStayInTheirNamespace: the parent chooses the
// application name of example.seal and example.open-digest, so the
// example methods must neither open state that other code sealed under
// the same key (open-digest would hand the parent its SHA-256) nor seal
// state that other code would open as its own (a forgery).
func TestExampleMethodsStayInTheirNamespace(t *testing.T) {
	pcr0 := bytes.Repeat([]byte{0x5b}, 48)
	emu, err := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0}})
	if err != nil {
		t.Fatal(err)
	}
	srv := kmstest.NewServer(t, kmstest.Options{AttestationRoots: emu.Roots()})
	key, err := srv.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: pcr0})})
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy := "tcp://" + srv.Addr()

	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none", "--drain-timeout", "2s",
			"--kms-key", key, "--kms-proxy", proxy, "--kms-roots", roots},
			Env{Stdout: &stdout, Stderr: &stderr, SysFS: virtioFS(), Emulator: emu})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("enclaved did not stop after cancel")
		}
	})
	addr := waitListening(t, stdout.String)
	creds, _ := srv.Credentials().Retrieve(context.Background())
	body, _ := protocol.Marshal(&protocol.CredentialsRequest{
		AccessKeyID: creds.AccessKeyID, SecretAccessKey: []byte(creds.SecretAccessKey), SessionToken: []byte(creds.SessionToken),
		ExpiresUnix: time.Now().Add(time.Hour).Unix(),
	})
	if r := call(t, addr, protocol.MethodCredentials, body); r.Code != 0 {
		t.Fatalf("credentials push: %+v", r)
	}

	// Other code in an enclave the key policy allows (the same image, or
	// another signed with the same certificate) seals its state.
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer nsm.Close()
	other, err := kms.New(kms.Config{Keys: []string{key}, ProxyAddr: proxy, RootCAs: srv.CertPool(), Credentials: srv.Credentials(), Attester: nsm, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	secret := []byte("1234")
	ledger, err := other.Seal(context.Background(), key, "ledger", secret)
	if err != nil {
		t.Fatal(err)
	}

	// The round trip the example methods are for still works.
	var sealed, digest []byte
	body, _ = protocol.Marshal(SealRequest{App: "ledger", Data: []byte("chosen by the parent")})
	r := call(t, addr, MethodSeal, body)
	if r.Code != 0 || protocol.Unmarshal(r.Body, &sealed) != nil {
		t.Fatalf("%s: %+v", MethodSeal, r)
	}
	body, _ = protocol.Marshal(OpenRequest{App: "ledger", Sealed: sealed})
	r = call(t, addr, MethodOpenDigest, body)
	want := sha256.Sum256([]byte("chosen by the parent"))
	if r.Code != 0 || protocol.Unmarshal(r.Body, &digest) != nil || !bytes.Equal(digest, want[:]) {
		t.Fatalf("%s of its own blob: %+v", MethodOpenDigest, r)
	}

	// The other code's blob does not open through the example method...
	body, _ = protocol.Marshal(OpenRequest{App: "ledger", Sealed: ledger})
	if r := call(t, addr, MethodOpenDigest, body); r.Code == 0 {
		leaked := sha256.Sum256(secret)
		t.Fatalf("%s opened another application's state (digest %x, SHA-256 of the state %x)", MethodOpenDigest, r.Body, leaked)
	}
	// ...and what the example method sealed is not the other code's state.
	if got, err := other.Open(context.Background(), "ledger", sealed); !errors.Is(err, kms.ErrSealed) {
		t.Fatalf("state sealed by %s opened as the ledger's: %q, %v", MethodSeal, got.Bytes(), err)
	}
}
