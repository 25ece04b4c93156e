package kms

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/enclavekit/enclavekit/protocol"
)

// ErrSealed means a sealed blob is not one Seal wrote, was changed, or
// was sealed for another application.
var ErrSealed = errors.New("kms: sealed state is corrupt, was tampered with, or belongs to another application")

// Limits of sealing.
const (
	// MaxSealPlaintext bounds the state Seal encrypts.
	MaxSealPlaintext = 64 << 20
	// MaxAppName bounds the application name.
	MaxAppName = 128
	// maxBlob bounds a KMS CiphertextBlob (KMS's own limit).
	maxBlob = 6144
	// maxARN bounds a key ARN in a sealed header.
	maxARN = 256
)

// sealMagic starts every sealed blob; the last byte is the format version.
var sealMagic = []byte("EKSEAL\x00\x01")

// EncryptionContextKey is the KMS encryption context key under which
// Seal binds the application name to the data key.
const EncryptionContextKey = "enclavekit:sealed-app"

// Seal encrypts application state so that it can be stored outside the
// enclave (by the parent, on disk, in S3) and opened only by an enclave
// whose measurements the key policy allows. It asks KMS for a fresh data
// key under keyID with the encryption context {EncryptionContextKey: app}
// (a Recipient call, so the key reaches only this enclave), encrypts with
// AES-256-GCM and returns one self-contained blob:
//
//	"EKSEAL\x00\x01" | u16 len | app | u16 len | key ARN | u16 len | KMS CiphertextBlob | 12-byte nonce | ciphertext and tag
//
// All lengths are big-endian; everything before the nonce is the AEAD's
// additional data, so no header byte can change unnoticed.
func (c *Client) Seal(ctx context.Context, keyID, app string, plaintext []byte) ([]byte, error) {
	if err := checkApp(app); err != nil {
		return nil, err
	}
	if len(plaintext) > MaxSealPlaintext {
		return nil, fmt.Errorf("%w: Seal: %d bytes of state, the limit is %d", ErrInput, len(plaintext), MaxSealPlaintext)
	}
	dk, err := c.GenerateDataKey(ctx, GenerateDataKeyInput{KeyID: keyID, EncryptionContext: map[string]string{EncryptionContextKey: app}})
	if err != nil {
		return nil, err
	}
	defer protocol.Zero(dk.Plaintext.Bytes())
	if len(dk.CiphertextBlob) > maxBlob || len(keyID) > maxARN {
		return nil, fmt.Errorf("kms: Seal: KMS answered with a %d-byte ciphertext blob", len(dk.CiphertextBlob))
	}
	aead, err := newGCM(dk.Plaintext.Bytes())
	if err != nil {
		return nil, err
	}
	header := appendField(appendField(appendField(bytes.Clone(sealMagic), []byte(app)), []byte(keyID)), dk.CiphertextBlob)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(header, nonce...)
	return aead.Seal(out, nonce, plaintext, header), nil
}

// Open decrypts a blob Seal wrote for app: KMS decrypts the data key
// (a Recipient call, with the key ARN from the blob, which must be pinned,
// and the encryption context naming app), then AES-256-GCM checks and
// decrypts the state.
func (c *Client) Open(ctx context.Context, app string, sealed []byte) (protocol.Secret, error) {
	if err := checkApp(app); err != nil {
		return protocol.Secret{}, err
	}
	s, err := parseSealed(sealed)
	if err != nil {
		return protocol.Secret{}, err
	}
	if s.app != app {
		return protocol.Secret{}, fmt.Errorf("%w (sealed for %q, opened as %q)", ErrSealed, s.app, app)
	}
	if err := c.checkKey("Open", s.keyID); err != nil {
		return protocol.Secret{}, err
	}
	key, err := c.Decrypt(ctx, DecryptInput{CiphertextBlob: s.blob, KeyID: s.keyID, EncryptionContext: map[string]string{EncryptionContextKey: app}})
	if err != nil {
		return protocol.Secret{}, err
	}
	defer protocol.Zero(key.Bytes())
	aead, err := newGCM(key.Bytes())
	if err != nil {
		return protocol.Secret{}, err
	}
	p, err := aead.Open(nil, s.nonce, s.ciphertext, s.header)
	if err != nil {
		return protocol.Secret{}, ErrSealed
	}
	defer protocol.Zero(p)
	return protocol.NewSecret(p), nil
}

func checkApp(app string) error {
	if app == "" || len(app) > MaxAppName {
		return fmt.Errorf("%w: the application name must be 1..%d bytes", ErrInput, MaxAppName)
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: data key of %d bytes", ErrRecipient, len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}

// sealed is a parsed sealed blob; its slices alias the input.
type sealed struct {
	app, keyID string
	blob       []byte
	header     []byte // the additional data
	nonce      []byte
	ciphertext []byte
}

// parseSealed reads the format Seal writes, checking every length against
// its limit and the input before use. It returns ErrSealed for anything
// else.
func parseSealed(b []byte) (sealed, error) {
	const nonceSize, tagSize = 12, 16
	in := b
	if len(b) > len(sealMagic)+3*2+MaxAppName+maxARN+maxBlob+nonceSize+MaxSealPlaintext+tagSize || !bytes.HasPrefix(b, sealMagic) {
		return sealed{}, ErrSealed
	}
	b = b[len(sealMagic):]
	field := func(limit int) ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint16(b))
		if n == 0 || n > limit || n > len(b)-2 {
			return nil, false
		}
		f := b[2 : 2+n]
		b = b[2+n:]
		return f, true
	}
	app, ok1 := field(MaxAppName)
	arn, ok2 := field(maxARN)
	blob, ok3 := field(maxBlob)
	if !ok1 || !ok2 || !ok3 || len(b) < nonceSize+tagSize {
		return sealed{}, ErrSealed
	}
	return sealed{
		app: string(app), keyID: string(arn), blob: blob,
		header: in[:len(in)-len(b)], nonce: b[:nonceSize], ciphertext: b[nonceSize:],
	}, nil
}
