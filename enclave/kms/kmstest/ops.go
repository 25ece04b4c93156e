package kmstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave/kms/internal/cms"
)

// KeyEncryptionAlgorithm is the only Recipient algorithm KMS accepts.
const KeyEncryptionAlgorithm = "RSAES_OAEP_SHA_256"

// Request and response shapes of the KMS JSON 1.1 API (the subset
// emulated), with the member names of the SDK's serializers. Blobs are
// base64 in JSON, which encoding/json does for []byte.

type recipientInfo struct {
	AttestationDocument    []byte `json:"AttestationDocument"`
	KeyEncryptionAlgorithm string `json:"KeyEncryptionAlgorithm"`
}

type createKeyRequest struct {
	Description           string `json:"Description"`
	KeySpec               string `json:"KeySpec"`
	CustomerMasterKeySpec string `json:"CustomerMasterKeySpec"`
	KeyUsage              string `json:"KeyUsage"`
	Policy                string `json:"Policy"`
	Origin                string `json:"Origin"`
	MultiRegion           bool   `json:"MultiRegion"`
	CustomKeyStoreID      string `json:"CustomKeyStoreId"`
	XksKeyID              string `json:"XksKeyId"`
}

type keyMetadata struct {
	AWSAccountID           string   `json:"AWSAccountId"`
	Arn                    string   `json:"Arn"`
	CreationDate           float64  `json:"CreationDate"`
	CustomerMasterKeySpec  string   `json:"CustomerMasterKeySpec"`
	Description            string   `json:"Description"`
	Enabled                bool     `json:"Enabled"`
	EncryptionAlgorithms   []string `json:"EncryptionAlgorithms,omitempty"`
	KeyAgreementAlgorithms []string `json:"KeyAgreementAlgorithms,omitempty"`
	KeyID                  string   `json:"KeyId"`
	KeyManager             string   `json:"KeyManager"`
	KeySpec                string   `json:"KeySpec"`
	KeyState               string   `json:"KeyState"`
	KeyUsage               string   `json:"KeyUsage"`
	MultiRegion            bool     `json:"MultiRegion"`
	Origin                 string   `json:"Origin"`
}

type createKeyResponse struct {
	KeyMetadata keyMetadata `json:"KeyMetadata"`
}

type encryptRequest struct {
	KeyID               string            `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	DryRun              bool              `json:"DryRun"`
}

type encryptResponse struct {
	CiphertextBlob      []byte `json:"CiphertextBlob"`
	KeyID               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

type decryptRequest struct {
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	KeyID               string            `json:"KeyId"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	Recipient           *recipientInfo    `json:"Recipient"`
	DryRun              bool              `json:"DryRun"`
}

type decryptResponse struct {
	KeyID                  string `json:"KeyId"`
	Plaintext              []byte `json:"Plaintext,omitempty"`
	CiphertextForRecipient []byte `json:"CiphertextForRecipient,omitempty"`
	EncryptionAlgorithm    string `json:"EncryptionAlgorithm"`
}

type generateDataKeyRequest struct {
	KeyID             string            `json:"KeyId"`
	KeySpec           string            `json:"KeySpec"`
	NumberOfBytes     *int              `json:"NumberOfBytes"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	Recipient         *recipientInfo    `json:"Recipient"`
	DryRun            bool              `json:"DryRun"`
}

type generateDataKeyResponse struct {
	CiphertextBlob         []byte `json:"CiphertextBlob"`
	KeyID                  string `json:"KeyId"`
	Plaintext              []byte `json:"Plaintext,omitempty"`
	CiphertextForRecipient []byte `json:"CiphertextForRecipient,omitempty"`
}

type generateDataKeyPairRequest struct {
	KeyID             string            `json:"KeyId"`
	KeyPairSpec       string            `json:"KeyPairSpec"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	Recipient         *recipientInfo    `json:"Recipient"`
	DryRun            bool              `json:"DryRun"`
}

type generateDataKeyPairResponse struct {
	KeyID                    string `json:"KeyId"`
	KeyPairSpec              string `json:"KeyPairSpec"`
	PublicKey                []byte `json:"PublicKey"`
	PrivateKeyCiphertextBlob []byte `json:"PrivateKeyCiphertextBlob"`
	PrivateKeyPlaintext      []byte `json:"PrivateKeyPlaintext,omitempty"`
	CiphertextForRecipient   []byte `json:"CiphertextForRecipient,omitempty"`
}

type generateRandomRequest struct {
	NumberOfBytes    *int           `json:"NumberOfBytes"`
	CustomKeyStoreID string         `json:"CustomKeyStoreId"`
	Recipient        *recipientInfo `json:"Recipient"`
}

type generateRandomResponse struct {
	Plaintext              []byte `json:"Plaintext,omitempty"`
	CiphertextForRecipient []byte `json:"CiphertextForRecipient,omitempty"`
}

type deriveSharedSecretRequest struct {
	KeyID                 string         `json:"KeyId"`
	KeyAgreementAlgorithm string         `json:"KeyAgreementAlgorithm"`
	PublicKey             []byte         `json:"PublicKey"`
	Recipient             *recipientInfo `json:"Recipient"`
	DryRun                bool           `json:"DryRun"`
}

type deriveSharedSecretResponse struct {
	KeyID                  string `json:"KeyId"`
	KeyAgreementAlgorithm  string `json:"KeyAgreementAlgorithm"`
	KeyOrigin              string `json:"KeyOrigin"`
	SharedSecret           []byte `json:"SharedSecret,omitempty"`
	CiphertextForRecipient []byte `json:"CiphertextForRecipient,omitempty"`
}

type getPublicKeyRequest struct {
	KeyID string `json:"KeyId"`
}

type getPublicKeyResponse struct {
	CustomerMasterKeySpec  string   `json:"CustomerMasterKeySpec"`
	KeyAgreementAlgorithms []string `json:"KeyAgreementAlgorithms"`
	KeyID                  string   `json:"KeyId"`
	KeySpec                string   `json:"KeySpec"`
	KeyUsage               string   `json:"KeyUsage"`
	PublicKey              []byte   `json:"PublicKey"`
}

type handler func(s *Server, body []byte) (any, *apiError)

var operations = map[string]handler{
	"CreateKey":           (*Server).createKeyOp,
	"Encrypt":             (*Server).encrypt,
	"Decrypt":             (*Server).decrypt,
	"GenerateDataKey":     (*Server).generateDataKey,
	"GenerateDataKeyPair": (*Server).generateDataKeyPair,
	"GenerateRandom":      (*Server).generateRandom,
	"DeriveSharedSecret":  (*Server).deriveSharedSecret,
	"GetPublicKey":        (*Server).getPublicKey,
}

func decode(body []byte, v any) *apiError {
	if err := decodeRequest(body, v); err != nil {
		return errf(errSerialization, "request body: %v", err)
	}
	return nil
}

func dryRun(b bool) *apiError {
	if b {
		return errf(errUnsupported, "DryRun is not emulated")
	}
	return nil
}

func (s *Server) createKeyOp(body []byte) (any, *apiError) {
	var req createKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	k, e := s.createKey(req)
	if e != nil {
		return nil, e
	}
	return createKeyResponse{KeyMetadata: s.metadata(k)}, nil
}

func (s *Server) metadata(k *key) keyMetadata {
	md := keyMetadata{
		AWSAccountID: s.opts.Account, Arn: k.arn, CreationDate: float64(k.created.UnixMilli()) / 1000,
		CustomerMasterKeySpec: k.spec, Description: k.description, Enabled: true,
		KeyID: k.id, KeyManager: "CUSTOMER", KeySpec: k.spec, KeyState: "Enabled",
		KeyUsage: k.usage, Origin: "AWS_KMS",
	}
	if k.usage == usageEncryptDecrypt {
		md.EncryptionAlgorithms = []string{specSymmetric}
	} else {
		md.KeyAgreementAlgorithms = []string{algorithmECDH}
	}
	return md
}

func (s *Server) encrypt(body []byte) (any, *apiError) {
	var req encryptRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	if len(req.Plaintext) == 0 || len(req.Plaintext) > MaxPlaintext {
		return nil, errf(errValidation, "Plaintext must be 1 to %d bytes", MaxPlaintext)
	}
	k, e := s.lookup(req.KeyID)
	if e != nil {
		return nil, e
	}
	if e := k.needSymmetric("Encrypt", req.EncryptionAlgorithm); e != nil {
		return nil, e
	}
	if e := s.authorize(k, "kms:Encrypt", nil); e != nil {
		return nil, e
	}
	blob, err := k.seal(req.Plaintext, req.EncryptionContext)
	if err != nil {
		return nil, errf(errInternal, "%v", err)
	}
	return encryptResponse{CiphertextBlob: blob, KeyID: k.arn, EncryptionAlgorithm: specSymmetric}, nil
}

func (s *Server) decrypt(body []byte) (any, *apiError) {
	var req decryptRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	if req.EncryptionAlgorithm != "" && req.EncryptionAlgorithm != specSymmetric {
		return nil, errf(errInvalidKeyUsage, "EncryptionAlgorithm %s is not valid for a symmetric key", req.EncryptionAlgorithm)
	}
	blob, err := parseCiphertextBlob(req.CiphertextBlob)
	if err != nil {
		return nil, errf(errInvalidCiphertext, "")
	}
	k, e := s.lookup(blob.keyID)
	if e != nil {
		return nil, errf(errInvalidCiphertext, "")
	}
	if req.KeyID != "" {
		want, e := s.lookup(req.KeyID)
		if e != nil {
			return nil, e
		}
		if want != k {
			return nil, errf(errIncorrectKey, "The key ID in the request does not identify a CMK that can perform this operation.")
		}
	}
	rcpt, e := s.recipient(req.Recipient)
	if e != nil {
		return nil, e
	}
	if e := s.authorize(k, "kms:Decrypt", rcpt); e != nil {
		return nil, e
	}
	plaintext, err := k.open(blob, req.EncryptionContext)
	if err != nil {
		return nil, errf(errInvalidCiphertext, "")
	}
	defer clear(plaintext)
	resp := decryptResponse{KeyID: k.arn, EncryptionAlgorithm: specSymmetric}
	if rcpt != nil {
		if resp.CiphertextForRecipient, e = rcpt.seal(plaintext); e != nil {
			return nil, e
		}
		return resp, nil
	}
	resp.Plaintext = append([]byte(nil), plaintext...)
	return resp, nil
}

func (s *Server) generateDataKey(body []byte) (any, *apiError) {
	var req generateDataKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	var n int
	switch {
	case req.KeySpec != "" && req.NumberOfBytes != nil:
		return nil, errf(errValidation, "Please specify either number of bytes or key spec.")
	case req.KeySpec == "AES_256":
		n = 32
	case req.KeySpec == "AES_128":
		n = 16
	case req.KeySpec != "":
		return nil, errf(errValidation, "1 validation error detected: Value '%s' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]", req.KeySpec)
	case req.NumberOfBytes != nil && *req.NumberOfBytes >= 1 && *req.NumberOfBytes <= MaxRandomBytes:
		n = *req.NumberOfBytes
	default:
		return nil, errf(errValidation, "Please specify either number of bytes (1 to %d) or key spec.", MaxRandomBytes)
	}
	k, e := s.lookup(req.KeyID)
	if e != nil {
		return nil, e
	}
	if e := k.needSymmetric("GenerateDataKey", ""); e != nil {
		return nil, e
	}
	rcpt, e := s.recipient(req.Recipient)
	if e != nil {
		return nil, e
	}
	if e := s.authorize(k, "kms:GenerateDataKey", rcpt); e != nil {
		return nil, e
	}
	dk := make([]byte, n)
	_, _ = rand.Read(dk)
	defer clear(dk)
	blob, err := k.seal(dk, req.EncryptionContext)
	if err != nil {
		return nil, errf(errInternal, "%v", err)
	}
	resp := generateDataKeyResponse{CiphertextBlob: blob, KeyID: k.arn}
	if rcpt != nil {
		if resp.CiphertextForRecipient, e = rcpt.seal(dk); e != nil {
			return nil, e
		}
		return resp, nil
	}
	resp.Plaintext = append([]byte(nil), dk...)
	return resp, nil
}

// Key pair specs GenerateDataKeyPair emulates.
var keyPairSpecs = []string{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"}

// newKeyPair generates a key pair of spec and returns its public key as DER
// SubjectPublicKeyInfo and its private key as DER PKCS#8, as KMS does.
func newKeyPair(spec string) (spki, pkcs8 []byte, err error) {
	var priv any
	switch spec {
	case "RSA_2048", "RSA_3072", "RSA_4096":
		bits, _ := strconv.Atoi(strings.TrimPrefix(spec, "RSA_"))
		priv, err = rsa.GenerateKey(rand.Reader, bits)
	case "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521":
		priv, err = ecdsa.GenerateKey(eccCurves[spec], rand.Reader)
	}
	if err != nil {
		return nil, nil, err
	}
	if spki, err = x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public()); err != nil {
		return nil, nil, err
	}
	if pkcs8, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
		return nil, nil, err
	}
	return spki, pkcs8, nil
}

func (s *Server) generateDataKeyPair(body []byte) (any, *apiError) {
	var req generateDataKeyPairRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	if !slices.Contains(keyPairSpecs, req.KeyPairSpec) {
		return nil, errf(errValidation, "1 validation error detected: Value '%s' at 'keyPairSpec' failed to satisfy constraint: Member must satisfy enum value set: [%s] (the emulated subset)",
			req.KeyPairSpec, strings.Join(keyPairSpecs, ", "))
	}
	k, e := s.lookup(req.KeyID)
	if e != nil {
		return nil, e
	}
	if e := k.needSymmetric("GenerateDataKeyPair", ""); e != nil {
		return nil, e
	}
	rcpt, e := s.recipient(req.Recipient)
	if e != nil {
		return nil, e
	}
	if e := s.authorize(k, "kms:GenerateDataKeyPair", rcpt); e != nil {
		return nil, e
	}
	spki, pkcs8, err := newKeyPair(req.KeyPairSpec)
	if err != nil {
		return nil, errf(errInternal, "generating the key pair: %v", err)
	}
	defer clear(pkcs8)
	blob, err := k.seal(pkcs8, req.EncryptionContext)
	if err != nil {
		return nil, errf(errInternal, "%v", err)
	}
	resp := generateDataKeyPairResponse{KeyID: k.arn, KeyPairSpec: req.KeyPairSpec, PublicKey: spki, PrivateKeyCiphertextBlob: blob}
	if rcpt != nil {
		if resp.CiphertextForRecipient, e = rcpt.seal(pkcs8); e != nil {
			return nil, e
		}
		return resp, nil
	}
	resp.PrivateKeyPlaintext = append([]byte(nil), pkcs8...)
	return resp, nil
}

func (s *Server) generateRandom(body []byte) (any, *apiError) {
	var req generateRandomRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if req.NumberOfBytes == nil || *req.NumberOfBytes < 1 || *req.NumberOfBytes > MaxRandomBytes {
		return nil, errf(errValidation, "NumberOfBytes must be 1 to %d", MaxRandomBytes)
	}
	if req.CustomKeyStoreID != "" {
		return nil, errf(errUnsupported, "custom key stores are not emulated")
	}
	// GenerateRandom names no key, so no key policy applies (as at KMS,
	// where only IAM policies govern it).
	rcpt, e := s.recipient(req.Recipient)
	if e != nil {
		return nil, e
	}
	b := make([]byte, *req.NumberOfBytes)
	_, _ = rand.Read(b)
	if rcpt != nil {
		defer clear(b)
		ct, e := rcpt.seal(b)
		if e != nil {
			return nil, e
		}
		return generateRandomResponse{CiphertextForRecipient: ct}, nil
	}
	return generateRandomResponse{Plaintext: b}, nil
}

func (s *Server) deriveSharedSecret(body []byte) (any, *apiError) {
	var req deriveSharedSecretRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := dryRun(req.DryRun); e != nil {
		return nil, e
	}
	if req.KeyAgreementAlgorithm != algorithmECDH {
		return nil, errf(errValidation, "1 validation error detected: Value '%s' at 'keyAgreementAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [%s]", req.KeyAgreementAlgorithm, algorithmECDH)
	}
	if len(req.PublicKey) == 0 || len(req.PublicKey) > 8192 {
		return nil, errf(errValidation, "PublicKey must be a DER SubjectPublicKeyInfo of 1 to 8192 bytes")
	}
	k, e := s.lookup(req.KeyID)
	if e != nil {
		return nil, e
	}
	if k.usage != usageKeyAgreement {
		return nil, errf(errInvalidKeyUsage, "%s key usage is %s which is not valid for DeriveSharedSecret.", k.arn, k.usage)
	}
	pk, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, errf(errValidation, "PublicKey is not a DER-encoded SubjectPublicKeyInfo")
	}
	epk, ok := pk.(*ecdsa.PublicKey)
	if !ok || epk.Curve != eccCurves[k.spec] {
		return nil, errf(errValidation, "PublicKey must be an elliptic curve key on the KMS key's curve (%s)", k.spec)
	}
	peer, err := epk.ECDH()
	if err != nil {
		return nil, errf(errValidation, "PublicKey is not a valid point on %s", k.spec)
	}
	rcpt, e := s.recipient(req.Recipient)
	if e != nil {
		return nil, e
	}
	if e := s.authorize(k, "kms:DeriveSharedSecret", rcpt); e != nil {
		return nil, e
	}
	// The raw shared secret: the x-coordinate of the ECDH point, as KMS
	// documents for DeriveSharedSecret (and as crypto/ecdh returns it).
	secret, err := k.agreement.ECDH(peer)
	if err != nil {
		return nil, errf(errValidation, "key agreement with PublicKey failed: %v", err)
	}
	defer clear(secret)
	resp := deriveSharedSecretResponse{KeyID: k.arn, KeyAgreementAlgorithm: algorithmECDH, KeyOrigin: "AWS_KMS"}
	if rcpt != nil {
		if resp.CiphertextForRecipient, e = rcpt.seal(secret); e != nil {
			return nil, e
		}
		return resp, nil
	}
	resp.SharedSecret = append([]byte(nil), secret...)
	return resp, nil
}

func (s *Server) getPublicKey(body []byte) (any, *apiError) {
	var req getPublicKeyRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	k, e := s.lookup(req.KeyID)
	if e != nil {
		return nil, e
	}
	if k.usage != usageKeyAgreement {
		return nil, errf(errUnsupported, "%s is a symmetric key; GetPublicKey needs an asymmetric key", k.arn)
	}
	if e := s.authorize(k, "kms:GetPublicKey", nil); e != nil {
		return nil, e
	}
	return getPublicKeyResponse{
		CustomerMasterKeySpec: k.spec, KeyAgreementAlgorithms: []string{algorithmECDH},
		KeyID: k.arn, KeySpec: k.spec, KeyUsage: k.usage, PublicKey: append([]byte(nil), k.spki...),
	}, nil
}

// verifiedRecipient is a Recipient whose document verified.
type verifiedRecipient struct {
	pub  *rsa.PublicKey
	cond map[string]string // lower-case condition key → value
}

// seal encrypts plaintext to the recipient in KMS's CMS shape.
func (r *verifiedRecipient) seal(plaintext []byte) ([]byte, *apiError) {
	out, err := cms.Seal(rand.Reader, r.pub, plaintext)
	if err != nil {
		return nil, errf(errInternal, "encrypting for the recipient: %v", err)
	}
	return out, nil
}

// recipient verifies a Recipient: the algorithm, the attestation document
// (signature and chain to Options.AttestationRoots, freshness), and its
// public key (an RSA SubjectPublicKeyInfo of 2048 to 4096 bits). It
// returns the condition values the key policy sees, or nil for no
// Recipient.
func (s *Server) recipient(ri *recipientInfo) (*verifiedRecipient, *apiError) {
	if ri == nil {
		return nil, nil
	}
	// KMS defaults KeyEncryptionAlgorithm to its only value.
	if ri.KeyEncryptionAlgorithm != "" && ri.KeyEncryptionAlgorithm != KeyEncryptionAlgorithm {
		return nil, errf(errValidation, "1 validation error detected: Value '%s' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [%s]",
			ri.KeyEncryptionAlgorithm, KeyEncryptionAlgorithm)
	}
	if len(ri.AttestationDocument) == 0 {
		return nil, errf(errValidation, "Recipient.AttestationDocument is required")
	}
	if s.opts.AttestationRoots == nil {
		return nil, errf(errValidation, "the attestation document is not valid (the emulator was given no attestation root)")
	}
	doc, err := attest.Verify(ri.AttestationDocument, attest.VerifyOptions{
		Roots:       s.opts.AttestationRoots,
		CurrentTime: s.clock(),
		MaxAge:      s.opts.DocumentMaxAge,
	})
	if err != nil {
		return nil, errf(errValidation, "the attestation document is not valid: %v", err)
	}
	if doc.NitroTPM {
		return nil, errf(errUnsupported, "NitroTPM attestation documents are not emulated")
	}
	if len(doc.PublicKey) == 0 {
		return nil, errf(errValidation, "the attestation document has no public key")
	}
	pk, err := x509.ParsePKIXPublicKey(doc.PublicKey)
	if err != nil {
		return nil, errf(errValidation, "the attestation document's public key is not a DER SubjectPublicKeyInfo")
	}
	pub, ok := pk.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < 2048 || pub.N.BitLen() > 4096 {
		return nil, errf(errValidation, "the attestation document's public key must be RSA with 2048 to 4096 bits")
	}
	cond := map[string]string{}
	for i, v := range doc.PCRs {
		cond[strings.ToLower(CondPCRPrefix+strconv.Itoa(i))] = hex.EncodeToString(v)
	}
	if v, ok := doc.PCRs[0]; ok {
		cond[strings.ToLower(CondImageSha384)] = hex.EncodeToString(v)
	}
	return &verifiedRecipient{pub: pub, cond: cond}, nil
}

// authorize evaluates k's key policy for action.
func (s *Server) authorize(k *key, action string, r *verifiedRecipient) *apiError {
	var cond map[string]string
	if r != nil {
		cond = r.cond
	}
	s.mu.Lock()
	p := k.policy
	s.mu.Unlock()
	if ok, why := p.allows(action, cond); !ok {
		s.log.Info("kmstest: access denied", "key", k.id, "action", action, "reason", why)
		return errf(errAccessDenied, "User: arn:aws:iam::%s:user/kmstest is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action (%s)",
			s.opts.Account, action, k.arn, action, why)
	}
	return nil
}
