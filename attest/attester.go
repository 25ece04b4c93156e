package attest

import "context"

// Request asks for an attestation document. Each field is at most 1024 bytes.
type Request struct {
	Nonce     []byte
	UserData  []byte
	PublicKey []byte
}

// Attester produces attestation documents: the NSM device in an enclave, or
// the emulator (attest/nsmtest) in tests and development.
type Attester interface {
	// Attest returns a COSE_Sign1 attestation document binding req's fields.
	Attest(ctx context.Context, req Request) ([]byte, error)
}
