package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/internal/testutil"
)

type fixture struct {
	kms       *kmstest.Server
	api       *awskms.Client // the emulator, called directly (test side)
	nsm       *attest.NSM
	good, bad string             // keys whose policies name this enclave's PCR0, and another
	agreement string             // an ECC key for DeriveSharedSecret
	relay     *testutil.Recorder // stands for the parent's egress route
	logs      *syncbuf.Buffer
	store     *kms.CredentialStore
	pcr0      []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pcr0 := bytes.Repeat([]byte{0x5b}, 48)
	emu, err := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0, 1: bytes.Repeat([]byte{1}, 48), 2: bytes.Repeat([]byte{2}, 48)}})
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsm.Close() })
	srv := kmstest.NewServer(t, kmstest.Options{AttestationRoots: emu.Roots()})
	f := &fixture{kms: srv, nsm: nsm, pcr0: pcr0, logs: &syncbuf.Buffer{}}
	if f.good, err = srv.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: pcr0})}); err != nil {
		t.Fatal(err)
	}
	if f.bad, err = srv.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: bytes.Repeat([]byte{0xee}, 48)})}); err != nil {
		t.Fatal(err)
	}
	if f.agreement, err = srv.CreateKey(kmstest.KeyOptions{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT"}); err != nil {
		t.Fatal(err)
	}
	f.api = awskms.New(awskms.Options{Region: srv.Region(), BaseEndpoint: aws.String(srv.URL()), HTTPClient: srv.HTTPClient(), Credentials: srv.Credentials()})
	if f.relay, err = testutil.NewRecorder(srv.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.relay.Close)
	f.store = kms.NewCredentialStore(kms.CredentialStoreOptions{WaitFirst: -1, Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
	creds, _ := srv.Credentials().Retrieve(context.Background())
	creds.CanExpire, creds.Expires = true, time.Now().Add(time.Hour)
	if err := f.store.Set(creds); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) config() kms.Config {
	return kms.Config{
		Keys:        []string{f.good, f.bad, f.agreement},
		ProxyAddr:   "tcp://" + f.relay.Addr(),
		RootCAs:     f.kms.CertPool(),
		Credentials: f.store,
		Attester:    f.nsm,
		Logger:      slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (f *fixture) client(t *testing.T, mutate ...func(*kms.Config)) *kms.Client {
	cfg := f.config()
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := kms.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// assertNeverSeen checks that secret, raw or in hex or base64, crossed
// neither the route nor a log line, nor appears in any KMS answer.
func (f *fixture) assertNeverSeen(t *testing.T, what string, secret []byte) {
	t.Helper()
	forms := [][]byte{secret, []byte(hex.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(secret))}
	for _, form := range forms {
		if bytes.Contains(f.relay.Bytes(), form) {
			t.Errorf("%s crossed the parent's route", what)
		}
		if strings.Contains(f.logs.String(), string(form)) {
			t.Errorf("%s reached a log line", what)
		}
		for _, e := range f.kms.Exchanges() {
			if bytes.Contains(e.Response, form) {
				t.Errorf("%s is in KMS's %s answer", what, e.Operation)
			}
		}
	}
}

func TestGenerateDataKeyThenDecrypt(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, kms.GenerateDataKeyInput{KeyID: f.good, EncryptionContext: map[string]string{"app": "e2e"}})
	if err != nil {
		t.Fatal(err)
	}
	if dk.Plaintext.Len() != 32 || dk.KeyID != f.good || len(dk.CiphertextBlob) == 0 {
		t.Fatalf("data key: %d bytes, key %s, blob %d bytes", dk.Plaintext.Len(), dk.KeyID, len(dk.CiphertextBlob))
	}
	again, err := c.Decrypt(ctx, kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, KeyID: f.good, EncryptionContext: map[string]string{"app": "e2e"}})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Equal(dk.Plaintext) {
		t.Fatal("Decrypt of the stored blob gave another key")
	}
	if kmsView, err := f.kms.RevealPlaintext(dk.CiphertextBlob, map[string]string{"app": "e2e"}); err != nil || !dk.Plaintext.EqualBytes(kmsView) {
		t.Fatalf("the enclave's data key is not the one KMS generated: %v", err)
	}
	for _, e := range f.kms.Exchanges() {
		var m map[string]any
		json.Unmarshal(e.Response, &m)
		if _, ok := m["Plaintext"]; ok {
			t.Errorf("%s answered with a Plaintext field", e.Operation)
		}
		if _, ok := m["CiphertextForRecipient"]; !ok && e.Status == 200 {
			t.Errorf("%s answered without CiphertextForRecipient", e.Operation)
		}
	}
	f.assertNeverSeen(t, "the data key", dk.Plaintext.Bytes())
	creds, _ := f.store.Retrieve(ctx)
	f.assertNeverSeen(t, "the secret access key", []byte(creds.SecretAccessKey))
	if !strings.Contains(f.logs.String(), "op=GenerateDataKey") {
		t.Errorf("no log line for the call:\n%s", f.logs.String())
	}
}

func TestOtherRecipientOperations(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	ctx := context.Background()

	r, err := c.GenerateRandom(ctx, 64)
	if err != nil || r.Len() != 64 {
		t.Fatalf("GenerateRandom: %d bytes, %v", r.Len(), err)
	}
	f.assertNeverSeen(t, "the random bytes", r.Bytes())

	for _, spec := range []kms.KeyPairSpec{kms.KeyPairRSA2048, kms.KeyPairECCP256} {
		kp, err := c.GenerateDataKeyPair(ctx, kms.GenerateDataKeyPairInput{KeyID: f.good, Spec: spec})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(kp.PrivateKey.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
		if err != nil || !bytes.Equal(pub, kp.PublicKey) {
			t.Fatalf("%s: the private key does not match the public key", spec)
		}
		f.assertNeverSeen(t, string(spec)+" private key", kp.PrivateKey.Bytes())
		again, err := c.Decrypt(ctx, kms.DecryptInput{CiphertextBlob: kp.PrivateKeyCiphertextBlob, KeyID: f.good})
		if err != nil || !again.Equal(kp.PrivateKey) {
			t.Fatalf("%s: Decrypt of the private key blob: %v", spec, err)
		}
	}

	// ECDH: the enclave's secret equals the peer's view of it.
	pk, err := f.api.GetPublicKey(ctx, &awskms.GetPublicKeyInput{KeyId: aws.String(f.agreement)})
	if err != nil {
		t.Fatal(err)
	}
	kmsPub, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	peerDER, _ := x509.MarshalPKIXPublicKey(peer.PublicKey())
	ss, err := c.DeriveSharedSecret(ctx, kms.DeriveSharedSecretInput{KeyID: f.agreement, PublicKey: peerDER})
	if err != nil {
		t.Fatal(err)
	}
	ecdhPub, err := kmsPub.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := peer.ECDH(ecdhPub)
	if !ss.EqualBytes(want) {
		t.Fatal("DeriveSharedSecret: the shared secrets differ")
	}
	f.assertNeverSeen(t, "the shared secret", want)
}

func TestWrongPCR0Refused(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	_, err := c.GenerateDataKey(context.Background(), kms.GenerateDataKeyInput{KeyID: f.bad})
	if !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("GenerateDataKey under a policy for another PCR0: %v, want ErrAccessDenied", err)
	}
	if !strings.Contains(err.Error(), "PCRs") || strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("error is not one clear line naming the PCRs: %q", err)
	}
}

func TestSealOpen(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	ctx := context.Background()
	state := []byte("the enclave's state: a signing key and counters")
	sealed, err := c.Seal(ctx, f.good, "ledger", state)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, state) {
		t.Fatal("sealed blob holds the state in clear")
	}
	// A restarted enclave: a new client, a new recipient key.
	c2 := f.client(t)
	got, err := c2.Open(ctx, "ledger", sealed)
	if err != nil || !got.EqualBytes(state) {
		t.Fatalf("Open = %q, %v", got.Bytes(), err)
	}
	if _, err := c2.Open(ctx, "other-app", sealed); !errors.Is(err, kms.ErrSealed) {
		t.Fatalf("opened as another application: %v", err)
	}
	for _, i := range []int{len(sealed) - 1, len(sealed) - 20, 12} {
		tampered := bytes.Clone(sealed)
		tampered[i] ^= 1
		if _, err := c2.Open(ctx, "ledger", tampered); err == nil {
			t.Fatalf("byte %d changed: opened", i)
		}
	}
	// The same blob, claiming an unpinned key.
	other := strings.Replace(f.good, f.good[len(f.good)-4:], "0000", 1)
	moved := bytes.Replace(sealed, []byte(f.good), []byte(other), 1)
	if _, err := c2.Open(ctx, "ledger", moved); !errors.Is(err, kms.ErrKeyNotPinned) {
		t.Fatalf("unpinned key in the blob: %v", err)
	}
}

func TestKeyNotPinned(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, func(cfg *kms.Config) { cfg.Keys = []string{f.good} })
	ctx := context.Background()
	n := len(f.kms.Exchanges())
	if _, err := c.GenerateDataKey(ctx, kms.GenerateDataKeyInput{KeyID: f.bad}); !errors.Is(err, kms.ErrKeyNotPinned) {
		t.Fatalf("unpinned key: %v", err)
	}
	if len(f.kms.Exchanges()) != n {
		t.Fatal("a request for an unpinned key was sent")
	}
}

// mitm is a KMS endpoint that the client trusts (as if the parent had
// credentials of its own account and a KMS-like answer), forwarding to the
// emulator and rewriting its answers.
func mitm(t *testing.T, f *fixture, rewrite func(map[string]any)) (addr string, roots *x509.CertPool) {
	target, _ := url.Parse(f.kms.URL())
	rp := &httputil.ReverseProxy{
		// To the emulator, keeping the Host the client signed (SigV4).
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: f.kms.HTTPClient().Transport,
	}
	rp.ModifyResponse = func(r *http.Response) error {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && r.StatusCode == 200 {
			rewrite(m)
			b, _ = json.Marshal(m)
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewUnstartedServer(rp)
	cert, pool := selfSignedFor(t, f.kms.Hostname())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), pool
}

func selfSignedFor(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

func TestAnswersAreChecked(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		rewrite func(map[string]any)
		want    error
	}{
		{"answer for another key", func(m map[string]any) {
			m["KeyId"] = "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		}, kms.ErrKeyNotPinned},
		{"plaintext beside the recipient answer", func(m map[string]any) {
			m["Plaintext"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
		}, kms.ErrPlaintextReturned},
		{"plaintext instead of the recipient answer", func(m map[string]any) {
			m["Plaintext"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
			delete(m, "CiphertextForRecipient")
		}, kms.ErrPlaintextReturned},
		{"recipient answer from another envelope", func(m map[string]any) {
			ct, _ := base64.StdEncoding.DecodeString(m["CiphertextForRecipient"].(string))
			ct[len(ct)-40] ^= 1
			m["CiphertextForRecipient"] = base64.StdEncoding.EncodeToString(ct)
		}, kms.ErrRecipient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, roots := mitm(t, f, tc.rewrite)
			c := f.client(t, func(cfg *kms.Config) { cfg.ProxyAddr = "tcp://" + addr; cfg.RootCAs = roots; cfg.MaxAttempts = 1 })
			_, err := c.GenerateDataKey(ctx, kms.GenerateDataKeyInput{KeyID: f.good})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A KMS endpoint that the enclave's roots do not vouch for is refused
	// at the TLS handshake.
	addr, _ := mitm(t, f, func(map[string]any) {})
	c := f.client(t, func(cfg *kms.Config) { cfg.ProxyAddr = "tcp://" + addr; cfg.MaxAttempts = 1 })
	if _, err := c.GenerateRandom(ctx, 8); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusted endpoint: %v", err)
	}
}

func TestNoCredentials(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, func(cfg *kms.Config) {
		cfg.Credentials = kms.NewCredentialStore(kms.CredentialStoreOptions{WaitFirst: -1})
		cfg.MaxAttempts = 1
	})
	if _, err := c.GenerateRandom(context.Background(), 8); !errors.Is(err, kms.ErrNoCredentials) {
		t.Fatalf("err = %v, want ErrNoCredentials", err)
	}
}
