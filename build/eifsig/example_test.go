package eifsig_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/enclavekit/enclavekit/build/eif"
	"github.com/enclavekit/enclavekit/build/eifsig"
)

func Example() {
	// A throw-away P-384 signing certificate; in production it comes from
	// your PKI and its key from an HSM or KMS-protected file.
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signer"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})

	signer, err := eifsig.NewSigner(certPEM, keyPEM)
	if err != nil {
		panic(err)
	}
	file, m, err := eif.Build(eif.Spec{
		Kernel: []byte("kernel"), Cmdline: "console=ttyS0",
		Ramdisks: [][]byte{[]byte("bootstrap"), []byte("app")},
		Metadata: []byte(`{"ImageName":"signed"}`),
		Signer:   signer,
	})
	if err != nil {
		panic(err)
	}
	img, err := eif.Parse(file)
	if err != nil {
		panic(err)
	}
	res, err := eifsig.Verify(img.Signature, img.Measure().PCR0)
	if err != nil {
		panic(err)
	}
	fmt.Println("signed:", img.Signed())
	fmt.Println("PCR8 matches:", res.PCR8 == *m.PCR8 && res.PCR8 == eif.PCR8(der))
	// Output:
	// signed: true
	// PCR8 matches: true
}
