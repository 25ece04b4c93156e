package kmstest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms/internal/cms"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
)

// Without a Recipient the emulator answers in plain, like KMS, and every
// KeyId is the key ARN even when the request named the bare key ID.
func TestPlainOperations(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	c := e.sdk()
	ctx := context.Background()
	ck, err := c.CreateKey(ctx, &awskms.CreateKeyInput{Description: aws.String("test")})
	if err != nil {
		t.Fatal(err)
	}
	md := ck.KeyMetadata
	arn := aws.ToString(md.Arn)
	if md.KeyState != types.KeyStateEnabled || md.KeySpec != types.KeySpecSymmetricDefault ||
		!strings.HasPrefix(arn, "arn:aws:kms:us-east-1:111122223333:key/") || !strings.HasSuffix(arn, aws.ToString(md.KeyId)) || md.CreationDate == nil {
		t.Fatalf("metadata %+v", md)
	}
	pt := []byte("attack at dawn")
	ectx := map[string]string{"purpose": "test"}
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: md.KeyId, Plaintext: pt, EncryptionContext: ectx})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc.CiphertextBlob, pt) || aws.ToString(enc.KeyId) != arn {
		t.Fatalf("Encrypt: KeyId %s, blob carries plaintext %v", aws.ToString(enc.KeyId), bytes.Contains(enc.CiphertextBlob, pt))
	}
	for _, keyID := range []*string{nil, md.KeyId, md.Arn} {
		dec, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ectx, KeyId: keyID})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dec.Plaintext, pt) || aws.ToString(dec.KeyId) != arn || dec.CiphertextForRecipient != nil {
			t.Fatalf("Decrypt: %q %s", dec.Plaintext, aws.ToString(dec.KeyId))
		}
	}

	for _, tt := range []struct {
		spec types.DataKeySpec
		n    *int32
		want int
	}{{types.DataKeySpecAes256, nil, 32}, {types.DataKeySpecAes128, nil, 16}, {"", aws.Int32(1), 1}, {"", aws.Int32(1024), 1024}} {
		dk, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: md.KeyId, KeySpec: tt.spec, NumberOfBytes: tt.n})
		if err != nil {
			t.Fatal(err)
		}
		if len(dk.Plaintext) != tt.want || aws.ToString(dk.KeyId) != arn {
			t.Fatalf("GenerateDataKey %s: %d bytes, KeyId %s", tt.spec, len(dk.Plaintext), aws.ToString(dk.KeyId))
		}
		back, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
		if err != nil || !bytes.Equal(back.Plaintext, dk.Plaintext) {
			t.Fatalf("data key round trip: %v", err)
		}
	}

	for _, spec := range []types.DataKeyPairSpec{types.DataKeyPairSpecRsa2048, types.DataKeyPairSpecEccNistP256} {
		kp, err := c.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{KeyId: md.KeyId, KeyPairSpec: spec})
		if err != nil {
			t.Fatal(err)
		}
		if kp.KeyPairSpec != spec || aws.ToString(kp.KeyId) != arn {
			t.Fatalf("GenerateDataKeyPair: spec %s, KeyId %s", kp.KeyPairSpec, aws.ToString(kp.KeyId))
		}
		checkKeyPair(t, kp.PublicKey, kp.PrivateKeyPlaintext)
		back, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: kp.PrivateKeyCiphertextBlob})
		if err != nil || !bytes.Equal(back.Plaintext, kp.PrivateKeyPlaintext) {
			t.Fatalf("private key blob round trip: %v", err)
		}
	}

	r, err := c.GenerateRandom(ctx, &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(17)})
	if err != nil || len(r.Plaintext) != 17 {
		t.Fatalf("GenerateRandom: %v, %d bytes", err, len(r.Plaintext))
	}
}

// checkKeyPair checks that pkcs8 is the DER PKCS#8 private key of the DER
// SubjectPublicKeyInfo spki.
func checkKeyPair(t *testing.T, spki, pkcs8 []byte) {
	t.Helper()
	priv, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		t.Fatalf("private key is not PKCS#8: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		t.Fatalf("public key is not a SubjectPublicKeyInfo: %v", err)
	}
	if !priv.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatal("the private key does not match the public key")
	}
}

// DeriveSharedSecret gives the raw ECDH x-coordinate: the same bytes the
// peer computes with the KMS key's public key from GetPublicKey.
func TestDeriveSharedSecret(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	c := e.sdk()
	ctx := context.Background()
	arn := createKey(t, c, &awskms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeKeyAgreement})
	pk, err := c.GetPublicKey(ctx, &awskms.GetPublicKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(pk.KeyId) != arn || pk.KeySpec != types.KeySpecEccNistP256 || pk.KeyUsage != types.KeyUsageTypeKeyAgreement ||
		len(pk.KeyAgreementAlgorithms) != 1 || pk.KeyAgreementAlgorithms[0] != types.KeyAgreementAlgorithmSpecEcdh {
		t.Fatalf("GetPublicKey: %+v", pk)
	}
	kmsPub, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peerSPKI, err := x509.MarshalPKIXPublicKey(peer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	kmsECDH, err := kmsPub.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.ECDH(kmsECDH)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{
		KeyId: aws.String(arn), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerSPKI,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.SharedSecret, want) || len(want) != 32 || aws.ToString(out.KeyId) != arn ||
		out.KeyAgreementAlgorithm != types.KeyAgreementAlgorithmSpecEcdh || out.KeyOrigin != types.OriginTypeAwsKms {
		t.Fatalf("DeriveSharedSecret: %+v", out)
	}

	// With a Recipient, the same secret arrives only inside the envelope.
	priv, rcpt := e.recipient(t)
	out, err = c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{
		KeyId: aws.String(arn), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerSPKI, Recipient: rcpt,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cms.Open(priv, out.CiphertextForRecipient)
	if err != nil || out.SharedSecret != nil || !bytes.Equal(got, want) {
		t.Fatalf("DeriveSharedSecret with Recipient: %v, SharedSecret %x", err, out.SharedSecret)
	}
}

// Each operation that takes a Recipient answers with CiphertextForRecipient
// only, in KMS's CMS shape for the document's key, under a key policy that
// requires the enclave's PCRs; the same policy refuses a request without a
// Recipient, a document with other PCRs and documents that do not verify.
func TestRecipient(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	ctx := context.Background()
	c := e.sdk()
	policy := kmstest.PolicyRequiringPCRs(map[int][]byte{0: e.pcrs[0], 1: e.pcrs[1]})
	sym := createKey(t, c, &awskms.CreateKeyInput{Policy: aws.String(policy)})
	ecc := createKey(t, c, &awskms.CreateKeyInput{Policy: aws.String(policy), KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeKeyAgreement})
	secret := []byte("the launch codes")
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(sym), Plaintext: secret})
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	peerSPKI, _ := x509.MarshalPKIXPublicKey(peer.PublicKey())

	// Each op returns the KeyId, the plaintext fields that must be empty and
	// the CiphertextForRecipient.
	type result struct {
		keyID  string
		plain  [][]byte
		sealed []byte
		check  func(t *testing.T, opened []byte)
	}
	ops := []struct {
		name string
		call func(r *types.RecipientInfo) (result, error)
	}{
		{"Decrypt", func(r *types.RecipientInfo) (result, error) {
			o, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.Plaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				if !bytes.Equal(b, secret) {
					t.Fatalf("opened %q", b)
				}
			}}, nil
		}},
		{"GenerateDataKey AES_256", func(r *types.RecipientInfo) (result, error) {
			o, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(sym), KeySpec: types.DataKeySpecAes256, Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.Plaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				if len(b) != 32 {
					t.Fatalf("data key is %d bytes", len(b))
				}
				// The stored blob is the same key, and only an attested
				// request gets it back.
				priv, rcpt := e.recipient(t)
				back, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: o.CiphertextBlob, Recipient: rcpt})
				if err != nil {
					t.Fatal(err)
				}
				again, err := cms.Open(priv, back.CiphertextForRecipient)
				if err != nil || !bytes.Equal(again, b) {
					t.Fatalf("the CiphertextBlob does not decrypt to the same key: %v", err)
				}
			}}, nil
		}},
		{"GenerateDataKey NumberOfBytes", func(r *types.RecipientInfo) (result, error) {
			o, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(sym), NumberOfBytes: aws.Int32(64), Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.Plaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				if len(b) != 64 {
					t.Fatalf("data key is %d bytes", len(b))
				}
			}}, nil
		}},
		{"GenerateDataKeyPair RSA_2048", func(r *types.RecipientInfo) (result, error) {
			o, err := c.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecRsa2048, Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.PrivateKeyPlaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				checkKeyPair(t, o.PublicKey, b)
			}}, nil
		}},
		{"GenerateDataKeyPair ECC_NIST_P256", func(r *types.RecipientInfo) (result, error) {
			o, err := c.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecEccNistP256, Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.PrivateKeyPlaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				checkKeyPair(t, o.PublicKey, b)
			}}, nil
		}},
		{"DeriveSharedSecret", func(r *types.RecipientInfo) (result, error) {
			o, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{KeyId: aws.String(ecc), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerSPKI, Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{aws.ToString(o.KeyId), [][]byte{o.SharedSecret}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				if len(b) != 32 {
					t.Fatalf("shared secret is %d bytes", len(b))
				}
			}}, nil
		}},
		{"GenerateRandom", func(r *types.RecipientInfo) (result, error) {
			o, err := c.GenerateRandom(ctx, &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(32), Recipient: r})
			if err != nil {
				return result{}, err
			}
			return result{"", [][]byte{o.Plaintext}, o.CiphertextForRecipient, func(t *testing.T, b []byte) {
				if len(b) != 32 {
					t.Fatalf("random is %d bytes", len(b))
				}
			}}, nil
		}},
	}

	other := newEnv(t, kmstest.Options{}) // another NSM root
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSPKI, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			priv, rcpt := e.recipient(t)
			res, err := op.call(rcpt)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range res.plain {
				if p != nil {
					t.Fatal("a plaintext field was returned with a Recipient")
				}
			}
			if op.name != "GenerateRandom" && !strings.HasPrefix(res.keyID, "arn:aws:kms:") {
				t.Fatalf("KeyId %q is not an ARN", res.keyID)
			}
			id, err := cms.RecipientKeyID(res.sealed)
			want, _ := cms.KeyID(&priv.PublicKey)
			if err != nil || !bytes.Equal(id, want[:]) {
				t.Fatalf("CiphertextForRecipient names recipient %x, want %x (%v)", id, want, err)
			}
			opened, err := cms.Open(priv, res.sealed)
			if err != nil {
				t.Fatal(err)
			}
			res.check(t, opened)

			refusals := []struct {
				name string
				rcpt *types.RecipientInfo
				want string
			}{
				{"document from another root", other.recipientFor(t, mustSPKI(t, &priv.PublicKey)), "ValidationException"},
				{"document without a public key", e.recipientFor(t, nil), "ValidationException"},
				{"document with an EC public key", e.recipientFor(t, ecSPKI), "ValidationException"},
				{"garbage document", &types.RecipientInfo{AttestationDocument: []byte{0xd2, 0x84}, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}, "ValidationException"},
				{"wrong algorithm", &types.RecipientInfo{AttestationDocument: rcpt.AttestationDocument, KeyEncryptionAlgorithm: "RSAES_OAEP_SHA_1"}, "ValidationException"},
			}
			if op.name != "GenerateRandom" { // no key, no key policy
				refusals = append(refusals, struct {
					name string
					rcpt *types.RecipientInfo
					want string
				}{"no Recipient", nil, "AccessDeniedException"})
			}
			for _, r := range refusals {
				if _, err := op.call(r.rcpt); apiCode(err) != r.want {
					t.Errorf("%s: err = %v, want %s", r.name, err, r.want)
				}
			}
		})
	}

	t.Run("other PCR0", func(t *testing.T) {
		wrong := createKey(t, c, &awskms.CreateKeyInput{Policy: aws.String(kmstest.PolicyRequiringPCRs(map[int][]byte{0: bytes.Repeat([]byte{0xee}, 48)}))})
		enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(wrong), Plaintext: secret})
		if err != nil {
			t.Fatal(err)
		}
		_, rcpt := e.recipient(t)
		_, err = c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, Recipient: rcpt})
		if apiCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "kms:Decrypt") {
			t.Fatalf("err = %v", err)
		}
	})

	// No response to a request with a Recipient carried a plaintext member
	// or the secret, whatever its encoding.
	checkNoPlaintext(t, e.kms.Exchanges(), secret)
}

func mustSPKI(t *testing.T, pub *rsa.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkNoPlaintext(t *testing.T, xs []kmstest.Exchange, secret []byte) {
	t.Helper()
	n := 0
	for _, x := range xs {
		var req struct{ Recipient json.RawMessage }
		_ = json.Unmarshal(x.Request, &req)
		if req.Recipient == nil {
			continue
		}
		n++
		var resp map[string]json.RawMessage
		if err := json.Unmarshal(x.Response, &resp); err != nil {
			t.Fatalf("%s response %q: %v", x.Operation, x.Response, err)
		}
		for _, m := range []string{"Plaintext", "PrivateKeyPlaintext", "SharedSecret"} {
			if _, ok := resp[m]; ok {
				t.Errorf("%s with a Recipient answered with %s", x.Operation, m)
			}
		}
		if bytes.Contains(x.Response, secret) || bytes.Contains(x.Response, []byte(base64.StdEncoding.EncodeToString(secret))) {
			t.Errorf("%s response carries the secret", x.Operation)
		}
	}
	if n == 0 {
		t.Fatal("no exchange with a Recipient was recorded")
	}
}

// A document older than Options.DocumentMaxAge is refused.
func TestRecipientStale(t *testing.T) {
	now := time.Now()
	e := newEnv(t, kmstest.Options{Now: func() time.Time { return now.Add(10 * time.Minute) }})
	_, rcpt := e.recipient(t)
	_, err := e.sdk().GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(8), Recipient: rcpt})
	if apiCode(err) != "ValidationException" {
		t.Fatalf("err = %v", err)
	}
}

// A server given no attestation roots refuses every Recipient.
func TestRecipientNoRoots(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	bare := kmstest.NewServer(t, kmstest.Options{})
	_, rcpt := e.recipient(t)
	_, err := sdk(bare).GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(8), Recipient: rcpt})
	if apiCode(err) != "ValidationException" || !strings.Contains(err.Error(), "no attestation root") {
		t.Fatalf("err = %v", err)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	ctx := context.Background()
	c := e.sdk()
	sym := createKey(t, c, &awskms.CreateKeyInput{})
	other := createKey(t, c, &awskms.CreateKeyInput{})
	ecc := createKey(t, c, &awskms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeKeyAgreement})
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(sym), Plaintext: []byte("x"), EncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(enc.CiphertextBlob)
	tampered[len(tampered)-1] ^= 1
	p384, _ := ecdh.P384().GenerateKey(rand.Reader)
	p384SPKI, _ := x509.MarshalPKIXPublicKey(p384.PublicKey())
	p256, _ := ecdh.P256().GenerateKey(rand.Reader)
	p256SPKI, _ := x509.MarshalPKIXPublicKey(p256.PublicKey())

	staticCreds := func(id, secret string) func(*awskms.Options) {
		return func(o *awskms.Options) {
			o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
			})
		}
	}
	createKeyCall := func(in *awskms.CreateKeyInput) func(*awskms.Client) error {
		return func(c *awskms.Client) error { _, err := c.CreateKey(ctx, in); return err }
	}
	tests := []struct {
		name string
		opts []func(*awskms.Options)
		call func(*awskms.Client) error
		want string
	}{
		{"wrong secret", []func(*awskms.Options){staticCreds(kmstest.DefaultAccessKeyID, "nope")}, createKeyCall(&awskms.CreateKeyInput{}), "InvalidSignatureException"},
		{"unknown access key", []func(*awskms.Options){staticCreds("AKIDUNKNOWN000000000", kmstest.DefaultSecretAccessKey)}, createKeyCall(&awskms.CreateKeyInput{}), "UnrecognizedClientException"},
		{"wrong region", []func(*awskms.Options){func(o *awskms.Options) { o.Region = "eu-west-1" }}, createKeyCall(&awskms.CreateKeyInput{}), "InvalidSignatureException"},
		{"unknown key", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String("00000000-0000-4000-8000-000000000000"), Plaintext: []byte("x")})
			return err
		}, "NotFoundException"},
		{"key of another account", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(strings.Replace(sym, "111122223333", "999999999999", 1)), Plaintext: []byte("x")})
			return err
		}, "NotFoundException"},
		{"alias", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String("alias/x"), Plaintext: []byte("x")})
			return err
		}, "NotFoundException"},
		{"plaintext too long", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(sym), Plaintext: make([]byte, 4097)})
			return err
		}, "ValidationException"},
		{"wrong encryption context", nil, func(c *awskms.Client) error {
			_, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"a": "c"}})
			return err
		}, "InvalidCiphertextException"},
		{"tampered blob", nil, func(c *awskms.Client) error {
			_, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: tampered, EncryptionContext: map[string]string{"a": "b"}})
			return err
		}, "InvalidCiphertextException"},
		{"garbage blob", nil, func(c *awskms.Client) error {
			_, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: []byte("garbage")})
			return err
		}, "InvalidCiphertextException"},
		{"incorrect key", nil, func(c *awskms.Client) error {
			_, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(other), EncryptionContext: map[string]string{"a": "b"}})
			return err
		}, "IncorrectKeyException"},
		{"data key spec and bytes", nil, func(c *awskms.Client) error {
			_, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(sym), KeySpec: types.DataKeySpecAes128, NumberOfBytes: aws.Int32(16)})
			return err
		}, "ValidationException"},
		{"data key neither", nil, func(c *awskms.Client) error {
			_, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(sym)})
			return err
		}, "ValidationException"},
		{"data key 1025 bytes", nil, func(c *awskms.Client) error {
			_, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(sym), NumberOfBytes: aws.Int32(1025)})
			return err
		}, "ValidationException"},
		{"random too many", nil, func(c *awskms.Client) error {
			_, err := c.GenerateRandom(ctx, &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(1025)})
			return err
		}, "ValidationException"},
		{"key pair spec not emulated", nil, func(c *awskms.Client) error {
			_, err := c.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{KeyId: aws.String(sym), KeyPairSpec: types.DataKeyPairSpecSm2})
			return err
		}, "ValidationException"},
		{"key pair from a key agreement key", nil, func(c *awskms.Client) error {
			_, err := c.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{KeyId: aws.String(ecc), KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			return err
		}, "InvalidKeyUsageException"},
		{"encrypt with a key agreement key", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(ecc), Plaintext: []byte("x")})
			return err
		}, "InvalidKeyUsageException"},
		{"shared secret from a symmetric key", nil, func(c *awskms.Client) error {
			_, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{KeyId: aws.String(sym), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: p256SPKI})
			return err
		}, "InvalidKeyUsageException"},
		{"shared secret with a peer on another curve", nil, func(c *awskms.Client) error {
			_, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{KeyId: aws.String(ecc), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: p384SPKI})
			return err
		}, "ValidationException"},
		{"shared secret with a garbage peer key", nil, func(c *awskms.Client) error {
			_, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{KeyId: aws.String(ecc), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: []byte{0x30, 0x00}})
			return err
		}, "ValidationException"},
		{"shared secret with another algorithm", nil, func(c *awskms.Client) error {
			_, err := c.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{KeyId: aws.String(ecc), KeyAgreementAlgorithm: "DH", PublicKey: p256SPKI})
			return err
		}, "ValidationException"},
		{"public key of a symmetric key", nil, func(c *awskms.Client) error {
			_, err := c.GetPublicKey(ctx, &awskms.GetPublicKeyInput{KeyId: aws.String(sym)})
			return err
		}, "UnsupportedOperationException"},
		{"dry run", nil, func(c *awskms.Client) error {
			_, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(sym), Plaintext: []byte("x"), DryRun: aws.Bool(true)})
			return err
		}, "UnsupportedOperationException"},
		{"RSA key", nil, createKeyCall(&awskms.CreateKeyInput{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt}), "UnsupportedOperationException"},
		{"ECC key for encryption", nil, createKeyCall(&awskms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256}), "ValidationException"},
		{"symmetric key for key agreement", nil, createKeyCall(&awskms.CreateKeyInput{KeyUsage: types.KeyUsageTypeKeyAgreement}), "ValidationException"},
		{"unsupported policy condition", nil, createKeyCall(&awskms.CreateKeyInput{Policy: aws.String(
			`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"aws:PrincipalArn":"x"}}}}`)}), "MalformedPolicyDocumentException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(e.sdk(tt.opts...))
			if got := apiCode(err); got != tt.want {
				t.Fatalf("error %v (code %q), want %s", err, got, tt.want)
			}
			for _, goName := range []string{"Go struct", "kmstest.", "*json.", "[]uint8", "main."} {
				if strings.Contains(err.Error(), goName) {
					t.Fatalf("message names a Go type: %v", err)
				}
			}
		})
	}
}

// Raw requests show the JSON error shape and status.
func TestErrorShape(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	tests := []struct {
		name   string
		method string
		mutate func(*http.Request)
		want   string
	}{
		{"unsigned", http.MethodPost, func(*http.Request) {}, "MissingAuthenticationTokenException"},
		{"bad header", http.MethodPost, func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 junk") }, "InvalidSignatureException"},
		{"GET", http.MethodGet, func(*http.Request) {}, "UnknownOperationException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.kms.URL()+"/", strings.NewReader(`{}`))
			req.Header.Set("X-Amz-Target", "TrentService.GenerateRandom")
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			tt.mutate(req)
			resp, err := e.kms.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var shape struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &shape); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if resp.StatusCode != http.StatusBadRequest || shape.Type != tt.want || shape.Message == "" ||
				resp.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
		})
	}
}

// A request signed more than 15 minutes away from the server's clock is
// refused.
func TestSignatureExpired(t *testing.T) {
	now := time.Now()
	e := newEnv(t, kmstest.Options{Now: func() time.Time { return now.Add(20 * time.Minute) }})
	_, err := e.sdk().GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(1)})
	if apiCode(err) != "InvalidSignatureException" || !strings.Contains(err.Error(), "Signature expired") {
		t.Fatalf("err = %v", err)
	}
}

// A client that dials a proxy (here: the emulator's address directly) but
// verifies the region's real endpoint name against the emulator's
// CertPool works, as the in-enclave client does.
func TestRealEndpointName(t *testing.T) {
	s := kmstest.NewServer(t, kmstest.Options{Region: "eu-west-1"})
	dialer := &net.Dialer{}
	var dialed []string
	var mu sync.Mutex
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			return dialer.DialContext(ctx, network, s.Addr())
		},
		TLSClientConfig: &tls.Config{RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12},
	}}
	c := awskms.New(awskms.Options{
		Region: s.Region(), BaseEndpoint: aws.String("https://kms.eu-west-1.amazonaws.com"),
		HTTPClient: hc, Credentials: s.Credentials(), RetryMaxAttempts: 1,
	})
	if _, err := c.GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	if len(dialed) == 0 || dialed[0] != "kms.eu-west-1.amazonaws.com:443" {
		t.Fatalf("dialed %v", dialed)
	}
	if s.Hostname() != "kms.eu-west-1.amazonaws.com" || s.Certificate().VerifyHostname(s.Hostname()) != nil {
		t.Fatalf("certificate does not carry %s", s.Hostname())
	}
	// Another region's name does not verify.
	c2 := awskms.New(awskms.Options{
		Region: s.Region(), BaseEndpoint: aws.String("https://kms.us-east-1.amazonaws.com"),
		HTTPClient: hc, Credentials: s.Credentials(), RetryMaxAttempts: 1,
	})
	if _, err := c2.GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(4)}); err == nil {
		t.Fatal("a certificate for another region's name was accepted")
	}
}

// The Go-side helpers: CreateKey, SetKeyPolicy, CheckPolicy,
// PolicyRequiringPCRs, the accessors.
func TestServerHelpers(t *testing.T) {
	e := newEnv(t, kmstest.Options{Region: "ap-south-1", Account: "123456789012"})
	s := e.kms
	if s.Region() != "ap-south-1" || s.Account() != "123456789012" || !strings.HasPrefix(s.URL(), "https://127.0.0.1:") ||
		"https://"+s.Addr() != s.URL() {
		t.Fatalf("accessors: %s %s %s %s", s.Region(), s.Account(), s.URL(), s.Addr())
	}
	creds, err := s.Credentials().Retrieve(context.Background())
	if err != nil || creds.AccessKeyID != kmstest.DefaultAccessKeyID {
		t.Fatalf("credentials %v %v", creds.AccessKeyID, err)
	}
	tests := []struct {
		name string
		o    kmstest.KeyOptions
		ok   bool
	}{
		{"default", kmstest.KeyOptions{}, true},
		{"ECC key agreement", kmstest.KeyOptions{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT"}, true},
		{"ECC without usage", kmstest.KeyOptions{KeySpec: "ECC_NIST_P256"}, false},
		{"RSA", kmstest.KeyOptions{KeySpec: "RSA_2048"}, false},
		{"PCR policy", kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(e.pcrs)}, true},
		{"bad policy", kmstest.KeyOptions{Policy: `{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"kms:*"}}`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arn, err := s.CreateKey(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("CreateKey = %q, %v; want ok=%v", arn, err, tt.ok)
			}
			if err == nil && !strings.HasPrefix(arn, "arn:aws:kms:ap-south-1:123456789012:key/") {
				t.Fatalf("ARN %s", arn)
			}
			if err != nil && strings.Contains(err.Error(), "Exception") {
				t.Fatalf("message carries a wire error type: %v", err)
			}
		})
	}

	// SetKeyPolicy takes effect on the next request.
	c := e.sdk()
	ctx := context.Background()
	arn, err := s.CreateKey(kmstest.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &awskms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKeyPolicy(arn, kmstest.PolicyRequiringPCRs(map[int][]byte{0: e.pcrs[0]})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("after SetKeyPolicy: %v", err)
	}
	if err := s.SetKeyPolicy(arn, "{"); err == nil {
		t.Fatal("SetKeyPolicy accepted a broken policy")
	}
	if err := s.SetKeyPolicy("arn:aws:kms:ap-south-1:123456789012:key/00000000-0000-4000-8000-000000000000", ""); err == nil {
		t.Fatal("SetKeyPolicy accepted an unknown key")
	}
	if err := kmstest.CheckPolicy(kmstest.PolicyRequiringPCRs(e.pcrs)); err != nil {
		t.Fatal(err)
	}

	for name, pcrs := range map[string]map[int][]byte{"empty": {}, "index 32": {32: make([]byte, 48)}} {
		t.Run("PolicyRequiringPCRs panics on "+name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			kmstest.PolicyRequiringPCRs(pcrs)
		})
	}
}

// Concurrent SDK clients and Go-side calls are race-free.
func TestConcurrent(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	arn, err := e.kms.CreateKey(kmstest.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.sdk()
			for range 5 {
				if _, err := c.GenerateDataKey(context.Background(), &awskms.GenerateDataKeyInput{KeyId: aws.String(arn), KeySpec: types.DataKeySpecAes256}); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					_ = e.kms.SetKeyPolicy(arn, "")
				}
				_ = e.kms.Exchanges()
			}
		}()
	}
	wg.Wait()
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    kmstest.Options
		ok   bool
	}{
		{"zero", kmstest.Options{}, true},
		{"region", kmstest.Options{Region: "eu-west-1"}, true},
		{"bad region", kmstest.Options{Region: "EU WEST"}, false},
		{"bad account", kmstest.Options{Account: "12"}, false},
		{"half credentials", kmstest.Options{Credentials: aws.Credentials{AccessKeyID: "A"}}, false},
		{"negative age", kmstest.Options{DocumentMaxAge: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.Validate(); (err == nil) != tt.ok || (err != nil && !errors.Is(err, kmstest.ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v (or ErrConfig)", err, tt.ok)
			}
			s, err := kmstest.New(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				s.Close()
			}
		})
	}
}

// signedRequest builds a SigV4-signed raw request to the emulator.
func signedRequest(t *testing.T, s *kmstest.Server, target, contentType string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", contentType)
	creds, err := s.Credentials().Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", s.Region(), time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

// Signed raw requests the SDK would never send: the emulator answers each
// with KMS's error type and a message for people.
func TestMalformedRequests(t *testing.T) {
	s := kmstest.NewServer(t, kmstest.Options{})
	const jsonType = "application/x-amz-json-1.1"
	tests := []struct {
		name, target, ctype, body, want, inMessage string
	}{
		{"unknown operation", "TrentService.ScheduleKeyDeletion", jsonType, `{}`, "UnknownOperationException", "not emulated"},
		{"other service", "Other.GenerateRandom", jsonType, `{}`, "UnknownOperationException", "not emulated"},
		{"wrong content type", "TrentService.GenerateRandom", "application/json", `{"NumberOfBytes":1}`, "SerializationException", "Content-Type"},
		{"not JSON", "TrentService.GenerateRandom", jsonType, `{"NumberOfBytes":`, "SerializationException", "ends too early"},
		{"wrong member type", "TrentService.GenerateRandom", jsonType, `{"NumberOfBytes":"8"}`, "SerializationException", "member NumberOfBytes has the wrong type"},
		{"member twice", "TrentService.GenerateRandom", jsonType, `{"NumberOfBytes":8,"NumberOfBytes":1024}`, "SerializationException", "appears twice"},
		{"bad base64", "TrentService.Decrypt", jsonType, `{"CiphertextBlob":"***"}`, "SerializationException", "base64"},
		{"body too large", "TrentService.GenerateRandom", jsonType, `{"Pad":"` + strings.Repeat("a", kmstest.MaxBodyBytes) + `"}`, "SerializationException", "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.HTTPClient().Do(signedRequest(t, s, tt.target, tt.ctype, []byte(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var shape struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&shape); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadRequest || shape.Type != tt.want || !strings.Contains(shape.Message, tt.inMessage) {
				t.Fatalf("%d %+v", resp.StatusCode, shape)
			}
			for _, goName := range []string{"Go struct", "kmstest.", "json:", "int32", "[]uint8"} {
				if strings.Contains(shape.Message, goName) {
					t.Fatalf("message names a Go type: %q", shape.Message)
				}
			}
		})
	}
}

// RevealPlaintext (for tests that look for a data key where it must not
// be) gives the key that the enclave received inside its envelope.
func TestRevealPlaintext(t *testing.T) {
	e := newEnv(t, kmstest.Options{})
	arn, err := e.kms.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(e.pcrs)})
	if err != nil {
		t.Fatal(err)
	}
	priv, rcpt := e.recipient(t)
	ectx := map[string]string{"app": "test"}
	out, err := e.sdk().GenerateDataKey(context.Background(), &awskms.GenerateDataKeyInput{
		KeyId: aws.String(arn), KeySpec: types.DataKeySpecAes256, EncryptionContext: ectx, Recipient: rcpt,
	})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := cms.Open(priv, out.CiphertextForRecipient)
	if err != nil {
		t.Fatal(err)
	}
	revealed, err := e.kms.RevealPlaintext(out.CiphertextBlob, ectx)
	if err != nil || !bytes.Equal(revealed, opened) {
		t.Fatalf("RevealPlaintext: %v", err)
	}
	if _, err := e.kms.RevealPlaintext(out.CiphertextBlob, nil); err == nil {
		t.Fatal("RevealPlaintext ignored the encryption context")
	}
	if _, err := e.kms.RevealPlaintext([]byte("junk"), ectx); err == nil {
		t.Fatal("RevealPlaintext accepted junk")
	}
	checkNoPlaintext(t, e.kms.Exchanges(), opened)
}

// Temporary credentials (as the instance role's, pushed from IMDS): the
// session token is checked, expired credentials are refused, and
// SetCredentials rotates them.
func TestTemporaryCredentials(t *testing.T) {
	now := time.Now()
	temp := aws.Credentials{AccessKeyID: "ASIATEMPORARY0000000", SecretAccessKey: "temporary-secret", SessionToken: "session-token",
		CanExpire: true, Expires: now.Add(time.Hour)}
	s := kmstest.NewServer(t, kmstest.Options{Credentials: temp})
	with := func(c aws.Credentials) func(*awskms.Options) {
		return func(o *awskms.Options) {
			o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return c, nil })
		}
	}
	call := func(opt func(*awskms.Options)) error {
		_, err := sdk(s, opt).GenerateRandom(context.Background(), &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(1)})
		return err
	}
	noToken, wrongToken := temp, temp
	noToken.SessionToken, wrongToken.SessionToken = "", "other"
	tests := []struct {
		name string
		c    aws.Credentials
		want string
	}{
		{"valid", temp, ""},
		{"no session token", noToken, "UnrecognizedClientException"},
		{"wrong session token", wrongToken, "UnrecognizedClientException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := call(with(tt.c)); apiCode(err) != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}

	rotated := temp
	rotated.AccessKeyID, rotated.SecretAccessKey, rotated.SessionToken = "ASIAROTATED000000000", "rotated-secret", "rotated-token"
	if err := s.SetCredentials(rotated); err != nil {
		t.Fatal(err)
	}
	if err := call(with(temp)); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("old credentials after rotation: %v", err)
	}
	if err := call(func(*awskms.Options) {}); err != nil { // Server.Credentials follows the rotation
		t.Fatalf("rotated credentials: %v", err)
	}
	expired := rotated
	expired.Expires = now.Add(-time.Minute)
	if err := s.SetCredentials(expired); err != nil {
		t.Fatal(err)
	}
	if err := call(with(expired)); apiCode(err) != "ExpiredTokenException" {
		t.Fatalf("expired credentials: %v", err)
	}
	if err := s.SetCredentials(aws.Credentials{AccessKeyID: "A"}); err == nil {
		t.Fatal("SetCredentials accepted credentials without a secret")
	}
}

// Documents as 2025+ NSMs write them (indefinite-length payload map) and
// documents of a debug-mode enclave (all-zero PCRs) go through the same
// verification; the debug enclave is refused by a PCR policy.
func TestRecipientDocumentVariants(t *testing.T) {
	pcr0 := bytes.Repeat([]byte{0x5a}, 48)
	tests := []struct {
		name string
		opts nsmtest.Options
		want string
	}{
		{"indefinite payload", nsmtest.Options{PCRs: map[int][]byte{0: pcr0}, IndefinitePayload: true}, ""},
		{"one intermediate", nsmtest.Options{PCRs: map[int][]byte{0: pcr0}, Intermediates: 1}, ""},
		{"debug mode", nsmtest.Options{}, "AccessDeniedException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, err := nsmtest.New(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			att, err := attest.OpenNSM(emu.Options())
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()
			s := kmstest.NewServer(t, kmstest.Options{AttestationRoots: emu.Roots()})
			arn, err := s.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: pcr0})})
			if err != nil {
				t.Fatal(err)
			}
			priv, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := att.Attest(context.Background(), attest.Request{PublicKey: mustSPKI(t, &priv.PublicKey)})
			if err != nil {
				t.Fatal(err)
			}
			out, err := sdk(s).GenerateDataKey(context.Background(), &awskms.GenerateDataKeyInput{
				KeyId: aws.String(arn), NumberOfBytes: aws.Int32(16),
				Recipient: &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256},
			})
			if apiCode(err) != tt.want || (tt.want == "" && err != nil) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if err == nil {
				if dk, err := cms.Open(priv, out.CiphertextForRecipient); err != nil || len(dk) != 16 {
					t.Fatalf("open: %v", err)
				}
			}
		})
	}
}
