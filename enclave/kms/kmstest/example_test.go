package kmstest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"log"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
)

// The AWS SDK's own KMS client, pointed at the emulator: a key whose policy
// requires the enclave's PCR0 gives a data key only to a request that
// carries an attestation document with that PCR0, and then only encrypted
// to the document's public key.
func Example() {
	pcr0 := make([]byte, 48)
	pcr0[0] = 0xa0
	nsmEmu, err := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0}})
	if err != nil {
		log.Fatal(err)
	}
	s, err := kmstest.New(kmstest.Options{AttestationRoots: nsmEmu.Roots()})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	keyARN, err := s.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: pcr0})})
	if err != nil {
		log.Fatal(err)
	}
	c := awskms.New(awskms.Options{
		Region:       s.Region(),
		BaseEndpoint: aws.String(s.URL()),
		HTTPClient:   s.HTTPClient(),
		Credentials:  s.Credentials(),
	})
	ctx := context.Background()

	// The parent, without an attestation document, is refused.
	_, err = c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256})
	fmt.Println("without a document:", apiCode(err))

	// The enclave attests a fresh RSA key.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		log.Fatal(err)
	}
	nsmDev, err := attest.OpenNSM(nsmEmu.Options())
	if err != nil {
		log.Fatal(err)
	}
	defer nsmDev.Close()
	doc, err := nsmDev.Attest(ctx, attest.Request{PublicKey: spki})
	if err != nil {
		log.Fatal(err)
	}
	out, err := c.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId:     aws.String(keyARN),
		KeySpec:   types.DataKeySpecAes256,
		Recipient: &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("with a document: plaintext", out.Plaintext == nil, "ciphertext for recipient", len(out.CiphertextForRecipient) > 0,
		"key", aws.ToString(out.KeyId) == keyARN)
	// Output:
	// without a document: AccessDeniedException
	// with a document: plaintext true ciphertext for recipient true key true
}
