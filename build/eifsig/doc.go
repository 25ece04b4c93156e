// Package eifsig reads, writes and verifies the signature section of an EIF
// and computes PCR8, the measurement of the signing certificate.
//
// It is separate from package build/eif so that eif depends only on the
// standard library; this package adds github.com/fxamacker/cbor/v2.
//
// # Wire format
//
// As aws/aws-nitro-enclaves-image-format writes it (src/defs/mod.rs,
// PcrSignature and PcrInfo; src/utils/mod.rs, generate_eif_signature), with
// serde_cbor, which encodes Rust's Vec<u8> as a CBOR array of small unsigned
// integers rather than as a byte string:
//
//	section = [ + { "signing_certificate": [* uint8],   ; the PEM file as given
//	                "signature":           [* uint8] } ] ; untagged COSE_Sign1
//	COSE_Sign1 = [ protected: bstr .cbor {1: alg},      ; -7, -35 or -36
//	               unprotected: {},
//	               payload: bstr .cbor { "register_index": 0,
//	                                     "register_value": [48 * uint8] },  ; PCR0
//	               signature: bstr ]                     ; r ‖ s
//
// nitro-cli takes the algorithm from the key's curve: ES256 (P-256, SHA-256,
// r and s 32 bytes each), ES384 (P-384, 48) or ES512 (P-521, 66); Verify
// accepts all three, Signer produces ES384.
//
// nitro-cli currently writes exactly one element, the signature of PCR0.
// PCR8 = SHA-384(48 zero bytes ‖ SHA-384(certificate DER)).
//
// Decoding uses a strict cbor.DecMode: duplicate keys, unknown fields,
// indefinite lengths and tags are rejected, and nesting, array and map sizes
// are bounded.
package eifsig
