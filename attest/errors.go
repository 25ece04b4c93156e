package attest

import "errors"

// Sentinel errors of the verifier. Every error returned by Verify and
// ParseUnverified wraps exactly one of them (or ErrConfig), so a caller (or the CLI) can
// name the check that failed with errors.Is.
var (
	// ErrMalformed: the bytes are not a well-formed attestation document
	// (bad CBOR, wrong COSE_Sign1 shape, a payload field of the wrong type,
	// size or value, an unknown payload key, an unparsable certificate).
	ErrMalformed = errors.New("attest: malformed attestation document")

	// ErrAlgorithm: the COSE protected header is not exactly {1: -35} (ES384).
	ErrAlgorithm = errors.New("attest: protected header is not ES384")

	// ErrChain: the certificate chain from the cabundle to the leaf does not
	// verify at the document's timestamp.
	ErrChain = errors.New("attest: certificate chain invalid")

	// ErrRootNotPinned: the chain does not end in a pinned root (the AWS
	// Nitro root by default, or VerifyOptions.Roots).
	ErrRootNotPinned = errors.New("attest: root certificate not pinned")

	// ErrLeafKey: the signing certificate does not hold a P-384 ECDSA key.
	ErrLeafKey = errors.New("attest: signing certificate key is not ECDSA P-384")

	// ErrSignature: the ES384 signature does not verify over the COSE
	// Sig_structure with the leaf certificate's key.
	ErrSignature = errors.New("attest: signature invalid")

	// ErrStale: freshness failed: the document is older than
	// VerifyOptions.MaxAge, dated in the future, or its signing certificate
	// has expired at VerifyOptions.CurrentTime.
	ErrStale = errors.New("attest: document not fresh")

	// ErrNonceMismatch: the document's nonce differs from VerifyOptions.Nonce.
	ErrNonceMismatch = errors.New("attest: nonce mismatch")

	// ErrPCRMismatch: a PCR differs from (or is missing for) VerifyOptions.PCRs,
	// or the document's PCRs are of the other kind (NitroTPM versus Nitro
	// Enclave, see VerifyOptions.NitroTPM).
	ErrPCRMismatch = errors.New("attest: PCR mismatch")

	// ErrUserDataMismatch: user_data differs from VerifyOptions.UserData.
	ErrUserDataMismatch = errors.New("attest: user_data mismatch")

	// ErrPublicKeyMismatch: public_key differs from VerifyOptions.PublicKey.
	ErrPublicKeyMismatch = errors.New("attest: public_key mismatch")
)

// ErrConfig is wrapped by every configuration error of the package: those of
// VerifyOptions.Validate and TLSOptions.Validate, and so of Verify,
// NewTLSConfig, ClientHandshake and TLSDialer. Verify's errors wrap it
// instead of a check's sentinel when the options themselves are invalid.
var ErrConfig = errors.New("attest: bad configuration")

// Sentinel errors of the NSM client, one per NSM error code of
// aws-nitro-enclaves-nsm-api (src/api/mod.rs, enum ErrorCode). The client
// returns ErrNSMInputTooLarge and ErrNSMInvalidIndex itself, before calling
// the device, for inputs over the NSM limits.
var (
	ErrNSMInvalidArgument  = errors.New("attest: nsm: invalid argument")
	ErrNSMInvalidIndex     = errors.New("attest: nsm: PCR index out of range")
	ErrNSMInvalidResponse  = errors.New("attest: nsm: invalid response")
	ErrNSMReadOnlyIndex    = errors.New("attest: nsm: PCR is locked (read-only)")
	ErrNSMInvalidOperation = errors.New("attest: nsm: invalid operation")
	ErrNSMBufferTooSmall   = errors.New("attest: nsm: buffer too small")
	ErrNSMInputTooLarge    = errors.New("attest: nsm: input too large")
	ErrNSMInternal         = errors.New("attest: nsm: internal error")
	// ErrNSMUnknownCode: the device returned an error code this package does
	// not know, or a response of the wrong kind.
	ErrNSMUnknownCode = errors.New("attest: nsm: unknown error code")
	// ErrNSMClosed: the client was closed.
	ErrNSMClosed = errors.New("attest: nsm: session closed")
)
