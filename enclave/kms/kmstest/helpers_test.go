package kmstest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
)

// testPCRs are the emulated enclave's measurements.
func testPCRs() map[int][]byte {
	m := map[int][]byte{}
	for i := range 3 {
		h := sha512.Sum384(fmt.Appendf(nil, "kmstest test PCR%d", i))
		m[i] = h[:]
	}
	return m
}

// env is a KMS emulator that trusts an NSM emulator, and that NSM.
type env struct {
	kms  *kmstest.Server
	nsm  *nsmtest.Emulator
	att  *attest.NSM
	pcrs map[int][]byte
}

func newEnv(t testing.TB, opts kmstest.Options) *env {
	t.Helper()
	pcrs := testPCRs()
	emu, err := nsmtest.New(nsmtest.Options{PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	att, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	if opts.AttestationRoots == nil {
		opts.AttestationRoots = emu.Roots()
	}
	return &env{kms: kmstest.NewServer(t, opts), nsm: emu, att: att, pcrs: pcrs}
}

// sdk is the real SDK client straight to the emulator.
func sdk(s *kmstest.Server, optFns ...func(*awskms.Options)) *awskms.Client {
	return awskms.New(awskms.Options{
		Region:           s.Region(),
		BaseEndpoint:     aws.String(s.URL()),
		HTTPClient:       s.HTTPClient(),
		Credentials:      s.Credentials(),
		RetryMaxAttempts: 1,
	}, optFns...)
}

func (e *env) sdk(optFns ...func(*awskms.Options)) *awskms.Client { return sdk(e.kms, optFns...) }

// recipient makes a fresh RSA key and an attestation document carrying it.
func (e *env) recipient(t testing.TB) (*rsa.PrivateKey, *types.RecipientInfo) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return priv, e.recipientFor(t, spki)
}

// recipientFor attests an arbitrary public key (or none).
func (e *env) recipientFor(t testing.TB, spki []byte) *types.RecipientInfo {
	t.Helper()
	doc, err := e.att.Attest(context.Background(), attest.Request{PublicKey: spki})
	if err != nil {
		t.Fatal(err)
	}
	return &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}
}

// createKey creates a key over the wire and returns its ARN.
func createKey(t testing.TB, c *awskms.Client, in *awskms.CreateKeyInput) string {
	t.Helper()
	out, err := c.CreateKey(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

// apiCode returns the smithy error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
