package kms

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave/kms/internal/cms"
	"github.com/enclavekit/enclavekit/protocol"
)

// ErrEnvelope is the one error OpenRecipient returns for any input it does
// not open: malformed, for another recipient, or corrupted. It carries no
// detail, so it is no padding oracle.
var ErrEnvelope = errors.New("kms: not a KMS CiphertextForRecipient that this key opens")

// MaxEnvelopeSize bounds a CiphertextForRecipient; larger inputs are
// refused before parsing. KMS's largest recipient payload is 4 KiB.
const MaxEnvelopeSize = cms.MaxSize

// OpenRecipient decrypts a KMS CiphertextForRecipient with the RSA private
// key whose public half was in the attestation document. It reads exactly
// the shape KMS writes (CMS EnvelopedData, RFC 5652: BER, one
// KeyTransRecipientInfo whose recipient id is the SHA-256 of the key's DER
// SubjectPublicKeyInfo, RSAES-OAEP-SHA-256, AES-256-CBC) and refuses
// anything else with ErrEnvelope.
func OpenRecipient(priv *rsa.PrivateKey, ciphertextForRecipient []byte) (protocol.Secret, error) {
	p, err := cms.Open(priv, ciphertextForRecipient)
	if err != nil {
		return protocol.Secret{}, ErrEnvelope
	}
	defer protocol.Zero(p)
	return protocol.NewSecret(p), nil
}

// RecipientKeyID returns the recipient identifier a CiphertextForRecipient
// names (the SHA-256 of the recipient's DER SubjectPublicKeyInfo) without
// decrypting, and the identifier of pub, so a tool can say whether an
// envelope was meant for a key. Both are public values.
func RecipientKeyID(ciphertextForRecipient []byte, pub *rsa.PublicKey) (envelope, key []byte, err error) {
	e, err := cms.RecipientKeyID(ciphertextForRecipient)
	if err != nil {
		return nil, nil, ErrEnvelope
	}
	k, err := cms.KeyID(pub)
	if err != nil {
		return nil, nil, err
	}
	return e, k[:], nil
}

// recipientKey is one RSA recipient key and its public key as the
// attestation document carries it.
type recipientKey struct {
	priv    *rsa.PrivateKey
	spki    []byte
	created time.Time
}

func (k *recipientKey) request() attest.Request { return attest.Request{PublicKey: k.spki} }

func (k *recipientKey) open(ct []byte) (protocol.Secret, error) { return OpenRecipient(k.priv, ct) }

// recipientKeys hands out the current recipient key and replaces it once
// it is older than lifetime. Generation happens under the lock, so
// concurrent callers wait for one key rather than each making their own.
type recipientKeys struct {
	lifetime time.Duration
	now      func() time.Time

	mu  sync.Mutex
	cur *recipientKey
}

func (r *recipientKeys) get() (*recipientKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.cur != nil && now.Sub(r.cur.created) < r.lifetime && !now.Before(r.cur.created) {
		return r.cur, nil
	}
	priv, err := rsa.GenerateKey(rand.Reader, RecipientKeyBits)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	r.cur = &recipientKey{priv: priv, spki: spki, created: now}
	return r.cur, nil
}
