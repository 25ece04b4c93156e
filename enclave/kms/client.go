package kms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// Errors of a call. Each wraps the underlying cause where there is one.
var (
	// ErrAccessDenied is KMS's AccessDeniedException. For a Recipient
	// request it usually means the key policy's
	// kms:RecipientAttestation conditions (ImageSha384 = PCR0, PCR<n>) do
	// not match this enclave's measurements.
	ErrAccessDenied = errors.New("kms: access denied by KMS; check that the key policy's kms:RecipientAttestation conditions name this enclave's PCRs (enclavekit kms policy --eif FILE)")
	// ErrPlaintextReturned means KMS answered a Recipient request with a
	// plaintext field, or without CiphertextForRecipient. The answer is
	// discarded.
	ErrPlaintextReturned = errors.New("kms: KMS answered a Recipient request in plaintext or without CiphertextForRecipient; answer discarded")
	// ErrKeyNotPinned means a request or an answer named a KMS key that is
	// not among Config.Keys.
	ErrKeyNotPinned = errors.New("kms: key is not pinned in the enclave's configuration")
	// ErrRecipient means CiphertextForRecipient did not open with the
	// recipient key, or held a result of the wrong size.
	ErrRecipient = errors.New("kms: CiphertextForRecipient does not open with this enclave's recipient key")
	// ErrInput means the caller's arguments are out of KMS's ranges.
	ErrInput = errors.New("kms: bad request")
)

// Client calls KMS from inside the enclave with attestation: every call
// that returns secret material sends a Recipient, so KMS returns it
// encrypted to a key that exists only in this process. A Client is safe
// for concurrent use.
type Client struct {
	cfg       Config
	api       *awskms.Client
	tr        *http.Transport
	log       *slog.Logger
	host      string
	recipient *recipientKeys
}

var fallbackRoots = sync.OnceValue(func() *x509.CertPool {
	p := x509.NewCertPool()
	for r := range bundle.Roots() {
		cert, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			continue
		}
		if r.Constraint == nil {
			p.AddCert(cert)
		} else {
			p.AddCertWithConstraint(cert, r.Constraint)
		}
	}
	return p
})

// New checks cfg and builds a Client. It opens no connection.
func New(cfg Config) (*Client, error) {
	partition, region, err := cfg.region()
	if err != nil {
		return nil, err
	}
	if cfg.ProxyAddr == "" {
		cfg.ProxyAddr = DefaultProxyAddr
	}
	if cfg.RootCAs == nil {
		cfg.RootCAs = fallbackRoots()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.RecipientKeyLifetime == 0 {
		cfg.RecipientKeyLifetime = DefaultRecipientKeyLifetime
	}
	cfg.Keys = slices.Clone(cfg.Keys)
	host := endpointHost(partition, region)
	proxyAddr := cfg.ProxyAddr
	tr := &http.Transport{
		// Never read HTTPS_PROXY and friends: the only way out is the route.
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return transport.Dial(ctx, proxyAddr)
		},
		// The server name comes from the pinned keys' region, not from the
		// request, so nothing but a certificate for the region's KMS
		// endpoint is accepted.
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, ServerName: host, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.CallTimeout,
		MaxIdleConns:          4,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       60 * time.Second,
		ForceAttemptHTTP2:     false,
	}
	api := awskms.New(awskms.Options{
		Region:           region,
		BaseEndpoint:     aws.String("https://" + host),
		Credentials:      cfg.Credentials,
		HTTPClient:       &http.Client{Transport: tr},
		Logger:           logging.Nop{},
		ClientLogMode:    0,
		RetryMaxAttempts: cfg.MaxAttempts,
	})
	return &Client{
		cfg: cfg, api: api, tr: tr, log: cfg.Logger, host: host,
		recipient: &recipientKeys{lifetime: cfg.RecipientKeyLifetime, now: time.Now},
	}, nil
}

// Close closes idle connections. Calls in flight are not interrupted.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Endpoint is the KMS host the client connects to through the proxy and
// whose certificate it verifies.
func (c *Client) Endpoint() string { return c.host }

// pinned reports whether id is exactly one of the configured key ARNs.
func (c *Client) pinned(id string) bool { return slices.Contains(c.cfg.Keys, id) }

// checkKey refuses a request key that is not pinned.
func (c *Client) checkKey(op, id string) error {
	if !c.pinned(id) {
		return fmt.Errorf("%w: %s: %q (pinned: %v)", ErrKeyNotPinned, op, id, c.cfg.Keys)
	}
	return nil
}

// checkAnswerKey refuses an answer that names a key other than the one
// asked for.
func checkAnswerKey(op, asked string, got *string) error {
	if aws.ToString(got) != asked {
		return fmt.Errorf("%w: %s: KMS answered for key %q, asked %q", ErrKeyNotPinned, op, aws.ToString(got), asked)
	}
	return nil
}

// DecryptInput is a Decrypt request.
type DecryptInput struct {
	// CiphertextBlob is what Encrypt or GenerateDataKey returned (required).
	CiphertextBlob []byte
	// KeyID is the ARN of the key that encrypted the blob (required, one of
	// Config.Keys). KMS refuses a blob of another key.
	KeyID string
	// EncryptionContext must equal the one used to encrypt.
	EncryptionContext map[string]string
}

// Decrypt decrypts a ciphertext blob with KMS; the plaintext comes back
// encrypted to this enclave's attested key and is decrypted here.
func (c *Client) Decrypt(ctx context.Context, in DecryptInput) (protocol.Secret, error) {
	const op = "Decrypt"
	if len(in.CiphertextBlob) == 0 || len(in.CiphertextBlob) > 6144 {
		return protocol.Secret{}, fmt.Errorf("%w: %s: ciphertext blob of %d bytes; want 1..6144", ErrInput, op, len(in.CiphertextBlob))
	}
	if err := c.checkKey(op, in.KeyID); err != nil {
		return protocol.Secret{}, err
	}
	return c.call(ctx, op, in.KeyID, -1, func(ctx context.Context, r *types.RecipientInfo) (*recipientAnswer, error) {
		out, err := c.api.Decrypt(ctx, &awskms.DecryptInput{
			CiphertextBlob: in.CiphertextBlob, KeyId: aws.String(in.KeyID),
			EncryptionContext: in.EncryptionContext, Recipient: r,
		})
		if err != nil {
			return nil, err
		}
		return &recipientAnswer{ct: out.CiphertextForRecipient, plaintext: out.Plaintext, keyErr: checkAnswerKey(op, in.KeyID, out.KeyId)}, nil
	})
}

// GenerateDataKeyInput is a GenerateDataKey request.
type GenerateDataKeyInput struct {
	// KeyID is the ARN of the KMS key that encrypts the data key
	// (required, one of Config.Keys).
	KeyID string
	// NumberOfBytes is the data key's length, 1..1024. Zero means 32
	// (AES-256).
	NumberOfBytes int
	// EncryptionContext is bound to the encrypted copy.
	EncryptionContext map[string]string
}

// DataKey is a generated data key.
type DataKey struct {
	// Plaintext is the data key; it never left the enclave in clear.
	Plaintext protocol.Secret
	// CiphertextBlob is the data key encrypted under KeyID, to store
	// beside the data (anywhere, the parent included) and Decrypt later.
	CiphertextBlob []byte
	// KeyID is the ARN of the KMS key.
	KeyID string
}

// GenerateDataKey asks KMS for a data key under in.KeyID; the plaintext
// copy comes back encrypted to this enclave's attested key.
func (c *Client) GenerateDataKey(ctx context.Context, in GenerateDataKeyInput) (DataKey, error) {
	const op = "GenerateDataKey"
	n := in.NumberOfBytes
	if n == 0 {
		n = 32
	}
	if n < 1 || n > 1024 {
		return DataKey{}, fmt.Errorf("%w: %s: %d bytes; want 1..1024", ErrInput, op, in.NumberOfBytes)
	}
	if err := c.checkKey(op, in.KeyID); err != nil {
		return DataKey{}, err
	}
	var blob []byte
	s, err := c.call(ctx, op, in.KeyID, n, func(ctx context.Context, r *types.RecipientInfo) (*recipientAnswer, error) {
		out, err := c.api.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
			KeyId: aws.String(in.KeyID), NumberOfBytes: aws.Int32(int32(n)),
			EncryptionContext: in.EncryptionContext, Recipient: r,
		})
		if err != nil {
			return nil, err
		}
		blob = out.CiphertextBlob
		a := &recipientAnswer{ct: out.CiphertextForRecipient, plaintext: out.Plaintext, keyErr: checkAnswerKey(op, in.KeyID, out.KeyId)}
		if a.keyErr == nil && len(blob) == 0 {
			a.keyErr = fmt.Errorf("kms: %s: KMS answered without a CiphertextBlob", op)
		}
		return a, nil
	})
	if err != nil {
		return DataKey{}, err
	}
	return DataKey{Plaintext: s, CiphertextBlob: blob, KeyID: in.KeyID}, nil
}

// KeyPairSpec names a data key pair type (KMS's DataKeyPairSpec values).
type KeyPairSpec string

// Data key pair types.
const (
	KeyPairRSA2048   KeyPairSpec = "RSA_2048"
	KeyPairRSA3072   KeyPairSpec = "RSA_3072"
	KeyPairRSA4096   KeyPairSpec = "RSA_4096"
	KeyPairECCP256   KeyPairSpec = "ECC_NIST_P256"
	KeyPairECCP384   KeyPairSpec = "ECC_NIST_P384"
	KeyPairECCP521   KeyPairSpec = "ECC_NIST_P521"
	KeyPairSECP256K1 KeyPairSpec = "ECC_SECG_P256K1"
)

// GenerateDataKeyPairInput is a GenerateDataKeyPair request.
type GenerateDataKeyPairInput struct {
	// KeyID is the ARN of the symmetric KMS key that encrypts the private
	// key (required, one of Config.Keys).
	KeyID string
	// Spec is the key pair type (required).
	Spec KeyPairSpec
	// EncryptionContext is bound to the encrypted private key.
	EncryptionContext map[string]string
}

// DataKeyPair is a generated asymmetric data key pair.
type DataKeyPair struct {
	// PrivateKey is the private key as PKCS#8 DER; it never left the
	// enclave in clear.
	PrivateKey protocol.Secret
	// PublicKey is the public key as DER SubjectPublicKeyInfo.
	PublicKey []byte
	// PrivateKeyCiphertextBlob is the private key encrypted under KeyID,
	// to store and Decrypt later.
	PrivateKeyCiphertextBlob []byte
	// KeyID is the ARN of the KMS key.
	KeyID string
	// Spec is the key pair type.
	Spec KeyPairSpec
}

// GenerateDataKeyPair asks KMS for an asymmetric data key pair; the
// private key comes back encrypted to this enclave's attested key.
func (c *Client) GenerateDataKeyPair(ctx context.Context, in GenerateDataKeyPairInput) (DataKeyPair, error) {
	const op = "GenerateDataKeyPair"
	if !slices.Contains(types.DataKeyPairSpec("").Values(), types.DataKeyPairSpec(in.Spec)) {
		return DataKeyPair{}, fmt.Errorf("%w: %s: key pair type %q; want one of %v", ErrInput, op, in.Spec, types.DataKeyPairSpec("").Values())
	}
	if err := c.checkKey(op, in.KeyID); err != nil {
		return DataKeyPair{}, err
	}
	var pub, blob []byte
	s, err := c.call(ctx, op, in.KeyID, -1, func(ctx context.Context, r *types.RecipientInfo) (*recipientAnswer, error) {
		out, err := c.api.GenerateDataKeyPair(ctx, &awskms.GenerateDataKeyPairInput{
			KeyId: aws.String(in.KeyID), KeyPairSpec: types.DataKeyPairSpec(in.Spec),
			EncryptionContext: in.EncryptionContext, Recipient: r,
		})
		if err != nil {
			return nil, err
		}
		pub, blob = out.PublicKey, out.PrivateKeyCiphertextBlob
		a := &recipientAnswer{ct: out.CiphertextForRecipient, plaintext: out.PrivateKeyPlaintext, keyErr: checkAnswerKey(op, in.KeyID, out.KeyId)}
		if a.keyErr == nil && (len(pub) == 0 || len(blob) == 0) {
			a.keyErr = fmt.Errorf("kms: %s: KMS answered without a public key or encrypted private key", op)
		}
		return a, nil
	})
	if err != nil {
		return DataKeyPair{}, err
	}
	if _, err := x509.ParsePKCS8PrivateKey(s.Bytes()); err != nil {
		protocol.Zero(s.Bytes())
		return DataKeyPair{}, fmt.Errorf("%w: %s: the private key is not PKCS#8", ErrRecipient, op)
	}
	return DataKeyPair{PrivateKey: s, PublicKey: pub, PrivateKeyCiphertextBlob: blob, KeyID: in.KeyID, Spec: in.Spec}, nil
}

// GenerateRandom returns n (1..1024) random bytes from KMS, encrypted to
// this enclave's attested key in transit.
func (c *Client) GenerateRandom(ctx context.Context, n int) (protocol.Secret, error) {
	const op = "GenerateRandom"
	if n < 1 || n > 1024 {
		return protocol.Secret{}, fmt.Errorf("%w: %s: %d bytes; want 1..1024", ErrInput, op, n)
	}
	return c.call(ctx, op, "", n, func(ctx context.Context, r *types.RecipientInfo) (*recipientAnswer, error) {
		out, err := c.api.GenerateRandom(ctx, &awskms.GenerateRandomInput{NumberOfBytes: aws.Int32(int32(n)), Recipient: r})
		if err != nil {
			return nil, err
		}
		return &recipientAnswer{ct: out.CiphertextForRecipient, plaintext: out.Plaintext}, nil
	})
}

// DeriveSharedSecretInput is a DeriveSharedSecret request.
type DeriveSharedSecretInput struct {
	// KeyID is the ARN of an asymmetric KMS key with key usage
	// KEY_AGREEMENT (required, one of Config.Keys).
	KeyID string
	// PublicKey is the peer's public key, DER SubjectPublicKeyInfo, on the
	// KMS key's curve (required).
	PublicKey []byte
}

// DeriveSharedSecret runs ECDH between the KMS key and PublicKey; the
// shared secret comes back encrypted to this enclave's attested key.
func (c *Client) DeriveSharedSecret(ctx context.Context, in DeriveSharedSecretInput) (protocol.Secret, error) {
	const op = "DeriveSharedSecret"
	if len(in.PublicKey) == 0 || len(in.PublicKey) > 8192 {
		return protocol.Secret{}, fmt.Errorf("%w: %s: peer public key of %d bytes; want 1..8192", ErrInput, op, len(in.PublicKey))
	}
	if err := c.checkKey(op, in.KeyID); err != nil {
		return protocol.Secret{}, err
	}
	return c.call(ctx, op, in.KeyID, -1, func(ctx context.Context, r *types.RecipientInfo) (*recipientAnswer, error) {
		out, err := c.api.DeriveSharedSecret(ctx, &awskms.DeriveSharedSecretInput{
			KeyId: aws.String(in.KeyID), KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh,
			PublicKey: in.PublicKey, Recipient: r,
		})
		if err != nil {
			return nil, err
		}
		return &recipientAnswer{ct: out.CiphertextForRecipient, plaintext: out.SharedSecret, keyErr: checkAnswerKey(op, in.KeyID, out.KeyId)}, nil
	})
}

// recipientAnswer is what a Recipient call got back.
type recipientAnswer struct {
	ct        []byte // CiphertextForRecipient
	plaintext []byte // must be empty
	keyErr    error  // the answer named the wrong key, or lacks a field
}

// call runs one Recipient call: the recipient key, a fresh attestation
// document binding it, the request, the checks on the answer and the
// decryption inside the enclave. want is the expected plaintext length,
// or -1 when any length is possible.
func (c *Client) call(ctx context.Context, op, keyID string, want int,
	do func(context.Context, *types.RecipientInfo) (*recipientAnswer, error),
) (protocol.Secret, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	s, err := c.recipientCall(ctx, op, want, do)
	attrs := []any{"op", op, "took", time.Since(start).Round(time.Microsecond)}
	if keyID != "" {
		attrs = append(attrs, "key", keyID)
	}
	if err != nil {
		c.log.Warn("kms: call failed", append(attrs, "err", err)...)
		return protocol.Secret{}, err
	}
	c.log.Info("kms: call done", append(attrs, "bytes", s.Len())...)
	return s, nil
}

func (c *Client) recipientCall(ctx context.Context, op string, want int,
	do func(context.Context, *types.RecipientInfo) (*recipientAnswer, error),
) (protocol.Secret, error) {
	rk, err := c.recipient.get()
	if err != nil {
		return protocol.Secret{}, fmt.Errorf("kms: %s: generating the recipient key: %w", op, err)
	}
	doc, err := c.cfg.Attester.Attest(ctx, rk.request())
	if err != nil {
		return protocol.Secret{}, fmt.Errorf("kms: %s: attestation: %w", op, err)
	}
	a, err := do(ctx, &types.RecipientInfo{
		AttestationDocument:    doc,
		KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
	})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "AccessDeniedException" {
			return protocol.Secret{}, fmt.Errorf("%w (%s: %s)", ErrAccessDenied, op, ae.ErrorMessage())
		}
		return protocol.Secret{}, fmt.Errorf("kms: %s: %w", op, err)
	}
	leaked := len(a.plaintext) > 0
	protocol.Zero(a.plaintext)
	if leaked || len(a.ct) == 0 {
		return protocol.Secret{}, fmt.Errorf("%w (%s)", ErrPlaintextReturned, op)
	}
	if a.keyErr != nil {
		return protocol.Secret{}, a.keyErr
	}
	s, err := rk.open(a.ct)
	if err != nil {
		return protocol.Secret{}, fmt.Errorf("%w (%s)", ErrRecipient, op)
	}
	if want >= 0 && s.Len() != want {
		protocol.Zero(s.Bytes())
		return protocol.Secret{}, fmt.Errorf("%w (%s: %d bytes, asked %d)", ErrRecipient, op, s.Len(), want)
	}
	return s, nil
}
