// Package protocol is the wire format shared by the enclave and the parent
// (protocol v1), and the small constant-time toolkit both sides use.
//
// A connection carries frames: a 4-byte big-endian payload length followed by
// the payload. The length is checked against a configured maximum (1 MiB by
// default, at most 64 MiB) before anything is allocated, and payload buffers
// grow with the data that actually arrives, never with the declared length.
//
// Each frame holds one Envelope, a CBOR map with small integer keys:
//
//	0 version (=1) · 1 request id · 2 method (requests) · 3 body ·
//	4 error code (responses) · 5 error message (generic)
//
// Envelopes are encoded canonically (RFC 8949 §4.2.1) and decoded strictly:
// duplicate keys, unknown keys, indefinite lengths, tags and trailing bytes are
// all rejected. Responses echo the request id, so one connection may carry many
// requests in flight.
//
// Error codes (Code) are generic across the enclave boundary: the message that
// crosses is fixed per code, and details stay in the enclave's log. A received
// error is a *RemoteError that matches its code's sentinel with errors.Is.
//
// Equal, Pad, Unpad, Zero and Secret handle secrets: constant-time comparison,
// length hiding, wiping, and a type that redacts itself wherever it is printed
// or logged.
package protocol
