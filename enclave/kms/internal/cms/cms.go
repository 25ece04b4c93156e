// Package cms reads and writes the one CMS shape AWS KMS uses for
// CiphertextForRecipient, the answer to a KMS request that carried a Nitro
// Enclaves attestation document as Recipient.
//
// The shape (RFC 5652 EnvelopedData; read from a real KMS response and
// from the parser in aws-nitro-enclaves-sdk-c, source/cms.c):
//
//	ContentInfo ::= SEQUENCE {                      -- BER, indefinite length
//	  contentType  id-envelopedData (1.2.840.113549.1.7.3),
//	  content [0] EXPLICIT EnvelopedData }          -- indefinite
//	EnvelopedData ::= SEQUENCE {                    -- indefinite
//	  version 2,
//	  recipientInfos SET {                          -- exactly one
//	    KeyTransRecipientInfo ::= SEQUENCE {
//	      version 2,
//	      rid [0] IMPLICIT SubjectKeyIdentifier,    -- SHA-256 of the recipient's DER SubjectPublicKeyInfo
//	      keyEncryptionAlgorithm id-RSAES-OAEP (RFC 8017) with
//	        RSAES-OAEP-params { [0] sha256, [1] mgf1(sha256) }   -- RFC 4055, no label
//	      encryptedKey OCTET STRING }},             -- the AES-256 key, RSA-OAEP wrapped
//	  encryptedContentInfo SEQUENCE {               -- indefinite
//	    contentType id-data,
//	    contentEncryptionAlgorithm aes256-CBC (2.16.840.1.101.3.4.1.42) with a 16-byte IV,
//	    encryptedContent [0] IMPLICIT OCTET STRING }}  -- constructed, chunked, PKCS#7-padded
//
// No originatorInfo, no unprotectedAttrs, nothing else. Open parses that
// shape and nothing wider: a bounded BER-to-DER step (ber.go), then
// encoding/asn1 with every element count, version, OID and parameter
// pinned. Every failure, whether of structure, recipient or decryption,
// is the single error ErrOpen, so callers cannot become a padding oracle.
//
// Seal writes the same shape, byte for byte as KMS does for the same
// plaintext length, for the KMS emulator and for tests.
package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"io"
)

// ErrOpen is the one error Open returns: the input is not a
// CiphertextForRecipient for this key, or does not decrypt.
var ErrOpen = errors.New("not a KMS CiphertextForRecipient that this key opens")

// KeyIDSize is the size of a recipient identifier (SHA-256).
const KeyIDSize = sha256.Size

// DER encodings of the fixed elements. KMS writes the hash
// AlgorithmIdentifiers with NULL parameters; RFC 4055 section 2.1 also
// allows them absent, so both are accepted.
var (
	derEnvelopedData = mustMarshal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3})
	derData          = mustMarshal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1})
	derAES256CBC     = mustMarshal(asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42})
	derVersion2      = mustMarshal(2)
	// derOAEP[0] is what KMS sends and Seal writes.
	derOAEP = oaepAlgorithms()
)

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

func oaepAlgorithms() [][]byte {
	var (
		oidOAEP   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
		oidMGF1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
		oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	)
	sha := []algorithmIdentifier{
		{Algorithm: oidSHA256, Parameters: asn1.NullRawValue},
		{Algorithm: oidSHA256},
	}
	type params struct {
		Hash algorithmIdentifier `asn1:"explicit,tag:0"`
		MGF  algorithmIdentifier `asn1:"explicit,tag:1"`
	}
	var out [][]byte
	for _, h := range sha {
		for _, m := range sha {
			p := mustMarshal(params{Hash: h, MGF: algorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mustMarshal(m)}}})
			out = append(out, mustMarshal(algorithmIdentifier{Algorithm: oidOAEP, Parameters: asn1.RawValue{FullBytes: p}}))
		}
	}
	return out
}

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// KeyID returns the identifier KMS gives the recipient pub: the SHA-256 of
// its DER SubjectPublicKeyInfo.
func KeyID(pub *rsa.PublicKey) ([KeyIDSize]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [KeyIDSize]byte{}, err
	}
	return sha256.Sum256(spki), nil
}

// envelope holds the parts of a parsed CiphertextForRecipient.
type envelope struct {
	keyID        []byte
	encryptedKey []byte
	iv           []byte
	ciphertext   []byte
}

// parse checks b against KMS's shape and returns its parts.
func parse(b []byte) (envelope, error) {
	der, err := toDER(b)
	if err != nil {
		return envelope{}, err
	}
	ci, err := sequence(der, 2)
	if err != nil || !bytes.Equal(ci[0].FullBytes, derEnvelopedData) || !is(ci[1], asn1.ClassContextSpecific, 0, true) {
		return envelope{}, errShape
	}
	ed, err := sequence(ci[1].Bytes, 3)
	if err != nil || !bytes.Equal(ed[0].FullBytes, derVersion2) || !is(ed[1], asn1.ClassUniversal, asn1.TagSet, true) {
		return envelope{}, errShape
	}
	ris, err := elements(ed[1].Bytes)
	if err != nil || len(ris) != 1 {
		return envelope{}, errShape
	}
	ktri, err := sequence(ris[0].FullBytes, 4)
	if err != nil || !bytes.Equal(ktri[0].FullBytes, derVersion2) ||
		!is(ktri[1], asn1.ClassContextSpecific, 0, false) || len(ktri[1].Bytes) != KeyIDSize ||
		!oneOf(ktri[2].FullBytes, derOAEP) ||
		!is(ktri[3], asn1.ClassUniversal, asn1.TagOctetString, false) || len(ktri[3].Bytes) == 0 {
		return envelope{}, errShape
	}
	eci, err := sequence(ed[2].FullBytes, 3)
	if err != nil || !bytes.Equal(eci[0].FullBytes, derData) || !is(eci[2], asn1.ClassContextSpecific, 0, eci[2].IsCompound) {
		return envelope{}, errShape
	}
	alg, err := sequence(eci[1].FullBytes, 2)
	if err != nil || !bytes.Equal(alg[0].FullBytes, derAES256CBC) ||
		!is(alg[1], asn1.ClassUniversal, asn1.TagOctetString, false) || len(alg[1].Bytes) != aes.BlockSize {
		return envelope{}, errShape
	}
	ct := eci[2].Bytes
	if eci[2].IsCompound { // BER's chunked form: OCTET STRINGs, concatenated
		chunks, err := elements(ct)
		if err != nil {
			return envelope{}, errShape
		}
		ct = make([]byte, 0, len(ct))
		for _, c := range chunks {
			if !is(c, asn1.ClassUniversal, asn1.TagOctetString, false) {
				return envelope{}, errShape
			}
			ct = append(ct, c.Bytes...)
		}
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return envelope{}, errShape
	}
	return envelope{keyID: ktri[1].Bytes, encryptedKey: ktri[3].Bytes, iv: alg[1].Bytes, ciphertext: ct}, nil
}

var errShape = errors.New("cms: not KMS's EnvelopedData shape")

// sequence parses b as exactly one SEQUENCE of exactly n elements.
func sequence(b []byte, n int) ([]asn1.RawValue, error) {
	var s asn1.RawValue
	rest, err := asn1.Unmarshal(b, &s)
	if err != nil || len(rest) != 0 || !is(s, asn1.ClassUniversal, asn1.TagSequence, true) {
		return nil, errShape
	}
	els, err := elements(s.Bytes)
	if err != nil || len(els) != n {
		return nil, errShape
	}
	return els, nil
}

// elements splits DER contents into their elements.
func elements(b []byte) ([]asn1.RawValue, error) {
	var out []asn1.RawValue
	for len(b) > 0 {
		var v asn1.RawValue
		var err error
		if b, err = asn1.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func is(v asn1.RawValue, class, tag int, compound bool) bool {
	return v.Class == class && v.Tag == tag && v.IsCompound == compound
}

func oneOf(b []byte, set [][]byte) bool {
	for _, s := range set {
		if bytes.Equal(b, s) {
			return true
		}
	}
	return false
}

// RecipientKeyID returns the recipient identifier an envelope names,
// without decrypting anything, so a tool can say which key it is for. The
// identifier is public (a hash of a public key).
func RecipientKeyID(b []byte) ([]byte, error) {
	e, err := parse(b)
	if err != nil {
		return nil, ErrOpen
	}
	return bytes.Clone(e.keyID), nil
}

// Open decrypts a CiphertextForRecipient with the private key whose public
// half was in the attestation document. It checks the shape, compares the
// recipient identifier with priv's in constant time, unwraps the content
// key with RSAES-OAEP-SHA-256, decrypts AES-256-CBC and removes the PKCS#7
// padding in constant time. Intermediate buffers are wiped. The returned
// slice is the caller's to wipe.
//
// AES-CBC carries no integrity: a changed IV or a changed ciphertext block
// other than the last two decrypts to different bytes of the same length.
// Integrity of a KMS answer comes from the TLS session with KMS, which
// ends inside the enclave.
func Open(priv *rsa.PrivateKey, b []byte) ([]byte, error) {
	if priv == nil {
		return nil, ErrOpen
	}
	e, err := parse(b)
	if err != nil {
		return nil, ErrOpen
	}
	want, err := KeyID(&priv.PublicKey)
	if err != nil || subtle.ConstantTimeCompare(e.keyID, want[:]) != 1 || len(e.encryptedKey) != priv.Size() {
		return nil, ErrOpen
	}
	key, err := rsa.DecryptOAEP(sha256.New(), nil, priv, e.encryptedKey, nil)
	if err != nil {
		return nil, ErrOpen
	}
	defer clear(key)
	if len(key) != 32 {
		return nil, ErrOpen
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrOpen
	}
	padded := make([]byte, len(e.ciphertext))
	cipher.NewCBCDecrypter(block, e.iv).CryptBlocks(padded, e.ciphertext)
	n, ok := unpad(padded)
	if !ok {
		clear(padded)
		return nil, ErrOpen
	}
	out := bytes.Clone(padded[:n])
	clear(padded)
	return out, nil
}

// unpad checks PKCS#7 padding (RFC 5652 section 6.3) without branching on
// the padding bytes and returns the unpadded length.
func unpad(b []byte) (int, bool) {
	p := int(b[len(b)-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, p)
		match := subtle.ConstantTimeByteEq(b[len(b)-i], byte(p))
		good &= ^inPad&1 | match
	}
	return len(b) - p, good == 1
}

// chunkSize is the size of the encrypted-content OCTET STRING chunks Seal
// writes.
const chunkSize = 1024

// Seal encrypts plaintext to pub in KMS's shape: a fresh AES-256 key and
// IV from random, the key wrapped with RSAES-OAEP-SHA-256, the content
// PKCS#7-padded. For a plaintext of the same length, the output differs
// from a KMS answer only in the encrypted key, the IV and the ciphertext.
func Seal(random io.Reader, pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxSize/2 {
		return nil, errors.New("cms: plaintext too large")
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	var key [32]byte
	defer clear(key[:])
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(random, key[:]); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(random, iv); err != nil {
		return nil, err
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), random, pub, key[:], nil)
	if err != nil {
		return nil, err
	}
	p := aes.BlockSize - len(plaintext)%aes.BlockSize
	ct := make([]byte, len(plaintext)+p)
	copy(ct, plaintext)
	for i := len(plaintext); i < len(ct); i++ {
		ct[i] = byte(p)
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)

	ktri := mustMarshal(struct {
		Version      int
		RID          []byte `asn1:"tag:0"`
		Alg          asn1.RawValue
		EncryptedKey []byte
	}{2, id[:], asn1.RawValue{FullBytes: derOAEP[0]}, wrapped})
	alg := mustMarshal(struct {
		Algorithm asn1.RawValue
		IV        []byte
	}{asn1.RawValue{FullBytes: derAES256CBC}, iv})
	var chunks []byte
	for rest := ct; len(rest) > 0; {
		n := min(len(rest), chunkSize)
		chunks = append(chunks, mustMarshal(rest[:n])...)
		rest = rest[n:]
	}
	set := mustMarshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: ktri})
	return indefinite(0x30, derEnvelopedData,
		indefinite(0xa0,
			indefinite(0x30, derVersion2, set,
				indefinite(0x30, derData, alg, indefinite(0xa0, chunks))))), nil
}

// indefinite writes a constructed element with an indefinite length
// (X.690 section 8.1.3.6), as KMS does for the outer layers.
func indefinite(id byte, contents ...[]byte) []byte {
	out := []byte{id, 0x80}
	for _, c := range contents {
		out = append(out, c...)
	}
	return append(out, 0, 0)
}
