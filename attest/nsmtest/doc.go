// Package nsmtest emulates the Nitro Security Module for tests and the
// development harness.
//
// An Emulator plugs into github.com/hf/nsm through nsm.Options{Open,
// Syscall}, so the real hf/nsm client code (request encoding, the ioctl
// message, response decoding) runs unchanged against it; attest.OpenNSM
// takes the same options. The emulator keeps 32 SHA-384 PCRs with the NSM's
// extend and lock semantics, answers DescribePCR, ExtendPCR, LockPCR,
// LockPCRs, DescribeNSM, GetRandom and Attestation with the device's error
// codes, and signs attestation documents of the real shape (COSE_Sign1,
// ES384, all nine payload keys, null for absent optional fields, timestamps
// in milliseconds) with a freshly generated P-384 chain root → intermediates
// → leaf. Pass Roots() (or RootPEM()) to the verifier instead of the AWS
// root.
//
// To exercise an enclave's startup checks, the emulator's clock can run
// ahead of or behind the system's (Options.ClockOffset, SetClockOffset)
// and it can emulate a debug-mode enclave, whose documents report all-zero
// PCRs (Options.Debug, SetDebug). Its PCRs start as zeros too; DevPCRs are
// non-zero stand-ins for an image's PCR0..2.
//
// Formats follow aws-nitro-enclaves-nsm-api (src/api/mod.rs: the Request,
// Response, ErrorCode and AttestationDoc types, serialized with serde CBOR)
// and RFC 8152 for COSE_Sign1.
//
// The emulator is for testing only: its root is generated in memory and is
// trusted by nothing but the tests that ask for it.
package nsmtest
