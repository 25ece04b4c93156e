package kms_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"log/slog"
	"testing"
	"testing/fstest"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// TestParentCannotAttestItsOwnKey plays the parent: it holds the role's
// credentials and can call the enclave's built-in methods. If the enclave
// signed an attestation document for a public key of the parent's
// choosing, that genuine document (this image's PCRs) would satisfy the
// key policy as a Recipient, and KMS would encrypt the enclave's data key
// to the parent.
func TestParentCannotAttestItsOwnKey(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, kms.GenerateDataKeyInput{KeyID: f.good, EncryptionContext: map[string]string{kms.EncryptionContextKey: "ledger"}})
	if err != nil {
		t.Fatal(err)
	}

	// The enclave's request server, with the same NSM as its KMS client.
	srv, err := enclave.New(enclave.Config{
		Addr: "tcp://127.0.0.1:0",
		SysFS: fstest.MapFS{
			"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("nsm-hwrng\n")},
			"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
		},
		Attester: f.nsm,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	if err := srv.Listen(sctx); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-served })

	// The parent asks for a document over its own key.
	mine, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&mine.PublicKey)
	body, _ := protocol.Marshal(&protocol.AttestRequest{PublicKey: spki})
	conn, err := transport.Dial(ctx, transport.AddrOf(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: protocol.MethodAttest, Body: body})
	if err := protocol.WriteFrame(conn, req, 0); err != nil {
		t.Fatal(err)
	}
	payload, err := protocol.ReadFrame(conn, nil, protocol.MaxFrameSizeLimit)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := protocol.UnmarshalEnvelope(payload)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code == protocol.CodeOK {
		var ar protocol.AttestResponse
		if err := protocol.Unmarshal(resp.Body, &ar); err != nil {
			t.Fatal(err)
		}
		// With it, the parent calls KMS itself.
		out, err := f.api.Decrypt(ctx, &awskms.DecryptInput{
			CiphertextBlob: dk.CiphertextBlob, EncryptionContext: map[string]string{kms.EncryptionContextKey: "ledger"},
			Recipient: &types.RecipientInfo{AttestationDocument: ar.Document, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256},
		})
		if err == nil {
			if got, err := kms.OpenRecipient(mine, out.CiphertextForRecipient); err == nil && got.Equal(dk.Plaintext) {
				t.Fatal("enclavekit.attest signed a document for the parent's key, and KMS released the enclave's data key to the parent with it")
			}
		}
		t.Fatalf("enclavekit.attest signed a document for a public key the caller chose (KMS decrypt with it: %v)", err)
	}
	if resp.Code != protocol.CodeBadRequest {
		t.Fatalf("enclavekit.attest with a caller's public key: code %d, want %d (bad request)", resp.Code, protocol.CodeBadRequest)
	}
}
