package parent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/protocol"
)

// DefaultAttestMaxAge is the freshness bound of Client.Attest when
// AttestOptions.MaxAge is zero.
const DefaultAttestMaxAge = 5 * time.Minute

// NonceSize is the length of the random nonce Client.Attest sends.
const NonceSize = 32

// ErrAttestation is wrapped by every error of Client.Attest that comes from
// the document rather than the call: it did not decode or did not verify.
// The attest package's sentinel (attest.ErrPCRMismatch…) is wrapped too.
var ErrAttestation = errors.New("parent: enclave attestation rejected")

// ErrDebugEnclave reports a document from a debug-mode enclave: its PCR0 is
// all zeros and the parent can read its memory, so nothing it holds is
// secret. Set AttestOptions.AllowDebug to accept one anyway.
var ErrDebugEnclave = errors.New("parent: the enclave runs in debug mode (PCR0 is all zeros)")

// isZero reports whether b is absent or all zero bytes.
func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// AttestOptions says what Client.Attest accepts. PCRs (or AnyImage) is
// required; every other zero field takes the default documented on it.
// The names are attest.TLSOptions' for the same ideas.
type AttestOptions struct {
	// Roots are the trust anchors of the document's certificate chain. nil
	// pins the AWS Nitro Enclaves root; tests pass nsmtest.Emulator.Roots().
	Roots *x509.CertPool
	// PCRs maps PCR index (0..31) to its expected 48-byte value. Every
	// entry must match. Empty is refused unless AnyImage is set, so
	// that a forgotten policy does not accept any enclave.
	PCRs map[int][]byte
	// AnyImage accepts a document whatever its PCRs, that is an enclave
	// running any image (the chain, signature, nonce and freshness are
	// still verified). For development. Even then a debug-mode enclave
	// (all-zero PCR0, whose memory and console the parent can read) is
	// refused unless AllowDebug.
	AnyImage bool
	// AllowDebug accepts a document whose PCR0 is all zeros, which
	// is what an enclave started with nitro-cli --debug-mode reports.
	AllowDebug bool
	// MaxAge bounds the document's age at Now. 0 means DefaultAttestMaxAge
	// (5m); freshness is always checked.
	MaxAge time.Duration
	// Now returns the verifier's clock. nil means time.Now.
	Now func() time.Time
	// UserData and PublicKey (at most 1024 bytes each) are sent to the
	// enclave and must come back in the document; nil requires them absent.
	// An enclavekit enclave refuses a PublicKey (bad request): KMS encrypts
	// to the key a document names, so only the enclave's own keys go there.
	UserData  []byte
	PublicKey []byte
	// ChainCache caches verified certificate chains; nil uses the attest
	// package's shared cache.
	ChainCache *attest.ChainCache
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig.
func (o AttestOptions) Validate() error {
	if len(o.PCRs) == 0 && !o.AnyImage {
		return fmt.Errorf("%w: AttestOptions.PCRs is empty, no expected PCRs were given: pass the values the enclave image must have (enclavekit eif describe prints them); AnyImage is for development only", ErrConfig)
	}
	for i, v := range o.PCRs {
		if i < 0 || i >= attest.MaxPCRs {
			return fieldErr("AttestOptions.PCRs index", i, "outside 0..%d", attest.MaxPCRs-1)
		}
		if len(v) != attest.PCRSize {
			return fieldErr(fmt.Sprintf("AttestOptions.PCRs[%d]", i), fmt.Sprintf("%d bytes", len(v)), "not %d (a SHA-384 PCR value)", attest.PCRSize)
		}
	}
	if o.MaxAge < 0 {
		return fieldErr("AttestOptions.MaxAge", o.MaxAge, "negative (0 means the default, %v)", DefaultAttestMaxAge)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"AttestOptions.UserData", o.UserData}, {"AttestOptions.PublicKey", o.PublicKey}} {
		if len(f.b) > attest.MaxFieldSize {
			return fieldErr(f.name, fmt.Sprintf("%d bytes", len(f.b)), "above attest.MaxFieldSize (%d bytes)", attest.MaxFieldSize)
		}
	}
	return nil
}

func (o AttestOptions) verifyOptions(nonce []byte) attest.VerifyOptions {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	maxAge := o.MaxAge
	if maxAge == 0 {
		maxAge = DefaultAttestMaxAge
	}
	// Non-nil empty slices require the fields to be absent.
	userData := o.UserData
	if userData == nil {
		userData = []byte{}
	}
	publicKey := o.PublicKey
	if publicKey == nil {
		publicKey = []byte{}
	}
	if nonce == nil {
		nonce = []byte{}
	}
	return attest.VerifyOptions{
		Roots:       o.Roots,
		CurrentTime: now(),
		MaxAge:      maxAge,
		Nonce:       nonce,
		PCRs:        o.PCRs,
		UserData:    userData,
		PublicKey:   publicKey,
		ChainCache:  o.ChainCache,
	}
}

// Attest asks the enclave for an attestation document over a fresh random
// nonce (and opts.UserData, opts.PublicKey), verifies it with attest.Verify
// against opts, and returns the verified document. It fails closed: any
// decoding or verification failure is an error (wrapping ErrAttestation and
// the attest sentinel), and no document is returned with it.
func (c *Client) Attest(ctx context.Context, opts AttestOptions) (*attest.Document, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("parent: attest nonce: %w", err)
	}
	body, err := protocol.Marshal(&protocol.AttestRequest{Nonce: nonce, UserData: opts.UserData, PublicKey: opts.PublicKey})
	if err != nil {
		return nil, fmt.Errorf("parent: attest request: %w", err)
	}
	out, err := c.CallRaw(ctx, protocol.MethodAttest, body)
	if err != nil {
		return nil, fmt.Errorf("parent: attest: %w", err)
	}
	var resp protocol.AttestResponse
	if err := protocol.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	doc, err := attest.Verify(resp.Document, opts.verifyOptions(nonce))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	if !opts.AllowDebug && isZero(doc.PCRs[0]) {
		return nil, fmt.Errorf("%w: %w", ErrAttestation, ErrDebugEnclave)
	}
	return doc, nil
}
