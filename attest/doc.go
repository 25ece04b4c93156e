// Package attest talks to the Nitro Security Module and verifies the
// attestation documents it produces.
//
// The NSM client (OpenNSM, OpenDefaultNSM) wraps github.com/hf/nsm: Attest,
// DescribePCR, ExtendPCR, LockPCR, LockPCRs, DescribeNSM and Read. Inputs
// over the NSM limits are rejected before the device is called, and every
// NSM error code maps to a sentinel (ErrNSMInvalidIndex…). In tests the
// device is replaced by the emulator of package attest/nsmtest, plugged in
// through the same nsm.Options seam.
//
// Verify checks a document completely: strict CBOR (duplicate keys, unknown
// payload keys, wrong types and oversized fields rejected), a COSE_Sign1
// (untagged or tag 18) whose protected header is exactly ES384 and whose
// unprotected header is empty, the certificate chain root → cabundle[1] →
// … → certificate, in that order and using every cabundle certificate once,
// to a pinned root (the AWS Nitro Enclaves root by default) at the
// document's timestamp, a P-384 signing
// key, the ES384 signature over the payload bytes as received, and then the
// caller's freshness and expected values (nonce, PCRs, user data, public
// key). It returns a *Document or an error wrapping one sentinel per check
// (ErrMalformed, ErrAlgorithm, ErrChain, ErrRootNotPinned, ErrLeafKey,
// ErrSignature, ErrStale, ErrNonceMismatch, ErrPCRMismatch…), never both.
// Verified cabundle chains are cached (ChainCache), so that documents from
// one host verify faster.
//
// Attested TLS (atls.go) is the client side of enclave.NewAttestedListener:
// NewTLSConfig, ClientHandshake and TLSDialer accept a TLS 1.3 peer only
// if its certificate's extension ExtensionOID carries a document that
// verifies as above and whose public_key is the certificate's key; with
// TLSOptions.Fresh they also ask, over the session, for a document whose
// nonce is the session's exporter value (ExporterLabel). Each failed check
// has its sentinel: ErrNoAttestation, ErrTLSKeyMismatch, ErrDebugMode,
// ErrNotSessionBound, ErrFreshExchange, besides those of Verify.
//
// Formats: the attestation document of aws-nitro-enclaves-nsm-api
// (src/api/mod.rs, AttestationDoc) and its docs/attestation_process.md;
// COSE_Sign1 and Sig_structure from RFC 8152; NitroTPM documents from the
// Amazon EC2 user guide ("NitroTPM Attestation Document contents").
package attest
