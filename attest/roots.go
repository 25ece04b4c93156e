package attest

import (
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
)

// awsRootPEM is the AWS Nitro Enclaves Root-G1 certificate, as distributed
// by AWS in AWS_NitroEnclaves_Root-G1.zip (CN=aws.nitro-enclaves, valid
// 2019-10-28 to 2049-10-28, P-384).
//
//go:embed aws_nitro_root_g1.pem
var awsRootPEM []byte

// AWSRootSHA256 is the hex SHA-256 of the AWS Nitro root certificate's DER,
// the pin that the default verification enforces.
const AWSRootSHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

var (
	awsRoot     *x509.Certificate
	awsRootPool *x509.CertPool
)

func init() {
	block, _ := pem.Decode(awsRootPEM)
	if block == nil {
		panic("attest: embedded AWS root is not PEM")
	}
	sum := sha256.Sum256(block.Bytes)
	if hex.EncodeToString(sum[:]) != AWSRootSHA256 {
		panic("attest: embedded AWS root does not match its pinned SHA-256")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("attest: embedded AWS root: " + err.Error())
	}
	awsRoot = c
	awsRootPool = x509.NewCertPool()
	awsRootPool.AddCert(c)
}

// AWSRoots returns a new pool holding only the pinned AWS Nitro Enclaves
// root certificate: the default of VerifyOptions.Roots.
func AWSRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(awsRoot)
	return p
}

// AWSRootPEM returns the pinned AWS Nitro Enclaves root certificate in PEM.
func AWSRootPEM() []byte { return append([]byte(nil), awsRootPEM...) }
