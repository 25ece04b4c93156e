package kmstest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Key specs, usages and algorithms the emulator models.
const (
	specSymmetric       = "SYMMETRIC_DEFAULT"
	usageEncryptDecrypt = "ENCRYPT_DECRYPT"
	usageKeyAgreement   = "KEY_AGREEMENT"
	algorithmECDH       = "ECDH"
)

// eccCurves maps the emulated elliptic-curve key specs to their curves.
var eccCurves = map[string]elliptic.Curve{
	"ECC_NIST_P256": elliptic.P256(),
	"ECC_NIST_P384": elliptic.P384(),
	"ECC_NIST_P521": elliptic.P521(),
}

// key is one emulated KMS key: symmetric (ENCRYPT_DECRYPT) or an
// elliptic-curve key for key agreement.
type key struct {
	id          string
	arn         string
	description string
	created     time.Time
	spec        string
	usage       string

	aead      cipher.AEAD      // symmetric: AES-256-GCM over the key's material
	agreement *ecdh.PrivateKey // KEY_AGREEMENT
	spki      []byte           // KEY_AGREEMENT: DER SubjectPublicKeyInfo

	policy *policy // guarded by Server.mu; nil is the default key policy
}

// needSymmetric refuses op on a key that is not a symmetric encryption key.
func (k *key) needSymmetric(op, algorithm string) *apiError {
	if k.usage != usageEncryptDecrypt {
		return errf(errInvalidKeyUsage, "%s key usage is %s which is not valid for %s.", k.arn, k.usage, op)
	}
	if algorithm != "" && algorithm != specSymmetric {
		return errf(errInvalidKeyUsage, "EncryptionAlgorithm %s is not valid for a symmetric key", algorithm)
	}
	return nil
}

// createKey validates a CreateKey request, makes the key and stores it.
func (s *Server) createKey(req createKeyRequest) (*key, *apiError) {
	spec := req.KeySpec
	if spec == "" {
		spec = req.CustomerMasterKeySpec
	} else if req.CustomerMasterKeySpec != "" && req.CustomerMasterKeySpec != spec {
		return nil, errf(errValidation, "KeySpec and CustomerMasterKeySpec differ")
	}
	if spec == "" {
		spec = specSymmetric
	}
	usage := req.KeyUsage
	if usage == "" {
		usage = usageEncryptDecrypt
	}
	switch {
	case req.Origin != "" && req.Origin != "AWS_KMS":
		return nil, errf(errUnsupported, "Origin %s is not emulated", req.Origin)
	case req.MultiRegion:
		return nil, errf(errUnsupported, "multi-Region keys are not emulated")
	case req.CustomKeyStoreID != "" || req.XksKeyID != "":
		return nil, errf(errUnsupported, "custom key stores are not emulated")
	case len(req.Description) > 8192:
		return nil, errf(errValidation, "Description is over 8192 characters")
	}
	k := &key{description: req.Description, created: s.clock(), spec: spec, usage: usage}
	switch _, ecc := eccCurves[spec]; {
	case spec == specSymmetric:
		if usage != usageEncryptDecrypt {
			return nil, errf(errValidation, "KeyUsage %s is not valid for KeySpec %s (use %s)", usage, spec, usageEncryptDecrypt)
		}
		material := make([]byte, 32)
		_, _ = rand.Read(material)
		block, err := aes.NewCipher(material)
		clear(material)
		if err != nil {
			return nil, errf(errInternal, "%v", err)
		}
		if k.aead, err = cipher.NewGCM(block); err != nil {
			return nil, errf(errInternal, "%v", err)
		}
	case ecc:
		if usage != usageKeyAgreement {
			return nil, errf(errValidation, "KeyUsage %s is not valid for KeySpec %s (the emulator models %s only)", usage, spec, usageKeyAgreement)
		}
		priv, err := ecdsa.GenerateKey(eccCurves[spec], rand.Reader)
		if err != nil {
			return nil, errf(errInternal, "%v", err)
		}
		if k.agreement, err = priv.ECDH(); err != nil {
			return nil, errf(errInternal, "%v", err)
		}
		if k.spki, err = x509.MarshalPKIXPublicKey(&priv.PublicKey); err != nil {
			return nil, errf(errInternal, "%v", err)
		}
	default:
		return nil, errf(errUnsupported, "KeySpec %s is not emulated (%s, or ECC_NIST_P256/P384/P521 with KeyUsage %s)", spec, specSymmetric, usageKeyAgreement)
	}
	if req.Policy != "" {
		var err error
		if k.policy, err = parsePolicy(req.Policy); err != nil {
			return nil, errf(errMalformedPolicy, "%v", err)
		}
	}
	k.id = newKeyID()
	k.arn = s.keyARN(k.id)
	s.mu.Lock()
	s.keys[k.id] = k
	s.mu.Unlock()
	return k, nil
}

func newKeyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Ciphertext blob format (the emulator's own; real KMS blobs are opaque
// too): "EKM1" ‖ len(keyID) u8 ‖ keyID ‖ nonce (12) ‖ AES-256-GCM sealed
// data, with the header and the encryption context as additional data.
const (
	blobMagic    = "EKM1"
	blobNonceLen = 12
	blobTagLen   = 16
	keyIDLen     = 36
	maxBlobBytes = 6144 // KMS's CiphertextBlob limit
)

// ciphertextBlob is a parsed emulator ciphertext blob.
type ciphertextBlob struct {
	keyID  string
	header []byte
	nonce  []byte
	sealed []byte
}

// parseCiphertextBlob splits an emulator ciphertext blob into its parts,
// checking every length before use. It authenticates nothing: opening the
// sealed data with the key does.
func parseCiphertextBlob(b []byte) (ciphertextBlob, error) {
	var c ciphertextBlob
	if len(b) > maxBlobBytes {
		return c, errors.New("ciphertext blob too long")
	}
	rest, ok := strings.CutPrefix(string(b), blobMagic)
	if !ok || len(rest) < 1 {
		return c, errors.New("not an emulator ciphertext blob")
	}
	n := int(rest[0])
	rest = rest[1:]
	if n != keyIDLen || len(rest) < n+blobNonceLen+blobTagLen {
		return c, errors.New("ciphertext blob truncated")
	}
	c.keyID = rest[:n]
	hlen := len(blobMagic) + 1 + n + blobNonceLen
	c.header = b[:hlen]
	c.nonce = b[hlen-blobNonceLen : hlen]
	c.sealed = b[hlen:]
	return c, nil
}

func (k *key) seal(plaintext []byte, ctx map[string]string) ([]byte, error) {
	if len(k.id) != keyIDLen {
		return nil, fmt.Errorf("key id %q has an unexpected length", k.id)
	}
	out := make([]byte, 0, len(blobMagic)+1+len(k.id)+blobNonceLen+len(plaintext)+blobTagLen)
	out = append(out, blobMagic...)
	out = append(out, byte(len(k.id)))
	out = append(out, k.id...)
	nonce := make([]byte, blobNonceLen)
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plaintext, append(append([]byte(nil), out...), encodeContext(ctx)...)), nil
}

func (k *key) open(c ciphertextBlob, ctx map[string]string) ([]byte, error) {
	if k.aead == nil {
		return nil, errors.New("not a symmetric key")
	}
	return k.aead.Open(nil, c.nonce, c.sealed, append(append([]byte(nil), c.header...), encodeContext(ctx)...))
}

// encodeContext is an unambiguous encoding of an encryption context: the
// pairs sorted by key, each as u32 length-prefixed key and value.
func encodeContext(ctx map[string]string) []byte {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []byte
	for _, k := range keys {
		out = binary.BigEndian.AppendUint32(out, uint32(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(ctx[k])))
		out = append(out, ctx[k]...)
	}
	return out
}
