package kmstest

import (
	"strings"
	"testing"
)

// FuzzDecodeRequest feeds arbitrary bodies to the request decoder with
// every emulated operation's shape; it must never panic, and an accepted
// body must be one JSON object.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"KeyId":"k","Plaintext":"aGVsbG8="}`, `{"NumberOfBytes":32}`,
		`{"CiphertextBlob":"RUtNMQ==","Recipient":{"AttestationDocument":"0oQ=","KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256"}}`,
		`{"KeyId":"k","KeyPairSpec":"RSA_2048","EncryptionContext":{"a":"b"}}`,
		`{"KeyId":"k","KeyAgreementAlgorithm":"ECDH","PublicKey":"MAA="}`,
		`{"Plaintext":"!!"}`, `[]`, `{} {}`, `{"NumberOfBytes":1e400}`, `{"a":1,"A":2}`,
		`{"Recipient":{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}`,
	} {
		f.Add([]byte(s))
	}
	shapes := []func() any{
		func() any { return new(createKeyRequest) }, func() any { return new(encryptRequest) },
		func() any { return new(decryptRequest) }, func() any { return new(generateDataKeyRequest) },
		func() any { return new(generateDataKeyPairRequest) }, func() any { return new(generateRandomRequest) },
		func() any { return new(deriveSharedSecretRequest) }, func() any { return new(getPublicKeyRequest) },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, shape := range shapes {
			err := decodeRequest(body, shape())
			if err == nil && checkJSON(body) != nil {
				t.Fatal("decodeRequest accepted what checkJSON refuses")
			}
			if err != nil && strings.Contains(err.Error(), "Go ") {
				t.Fatalf("message names a Go type: %v", err)
			}
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=" +
		"0000000000000000000000000000000000000000000000000000000000000000")
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request,Credential=x")
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseAuthorization(h)
		if err == nil && (a.AccessKeyID == "" || len(a.Signature) != 64 || a.SignedHeaders == "") {
			t.Fatalf("accepted an incomplete header: %+v", a)
		}
	})
}

func FuzzParseCiphertextBlob(f *testing.F) {
	f.Add([]byte("EKM1"))
	f.Add(append([]byte("EKM1\x24"), make([]byte, 36+12+16)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCiphertextBlob(b)
		if err == nil && len(c.keyID) != keyIDLen {
			t.Fatalf("key ID %q", c.keyID)
		}
	})
}

// FuzzParsePolicy: no panic; an accepted policy evaluates; a policy that
// names a PCR condition never allows Decrypt to a request without a
// document.
func FuzzParsePolicy(f *testing.F) {
	f.Add(PolicyRequiringPCRs(map[int][]byte{0: make([]byte, 48), 8: make([]byte, 48)}))
	f.Add(`{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"kms:*"}}`)
	f.Add(`{"Version":"2012-10-17","Statement":[]}`)
	f.Add(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR1":"aa"}},"condition":{}}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		p, err := parsePolicy(doc)
		if err != nil {
			if strings.Contains(err.Error(), "Go ") {
				t.Fatalf("message names a Go type: %v", err)
			}
			return
		}
		p.allows("kms:Decrypt", map[string]string{"kms:recipientattestation:imagesha384": "00"})
		p.allows("kms:GenerateRandom", nil)
		for _, st := range p.stmts {
			if st.allow && len(st.conds) > 0 {
				if ok, _ := (&policy{stmts: []statement{st}}).allows("kms:Decrypt", nil); ok {
					t.Fatal("a conditional statement allowed a request without a document")
				}
			}
		}
	})
}
