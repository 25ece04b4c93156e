// Package devharness runs the whole enclavekit system on loopback TCP and
// drives a scripted session through it: the code behind "enclavekit dev"
// and "make dev".
//
// It starts, on ports chosen free at start:
//
//   - the enclave server through enclaved's own code path
//     (internal/enclaved.Run) in dev mode, with the NSM emulator;
//   - the parent log sink;
//   - the egress proxy, with a fixed route to a local HTTPS test server
//     (the only allowlisted destination) and a CONNECT route;
//   - the HTTPS test server and a "canary" port that the proxy must refuse.
//
// Then it runs eight steps and prints one line per step: health (with the
// startup-check results dev mode overrode), attestation (fresh nonce,
// verified against the emulator's root and the expected PCRs, plus two
// negative checks), echo through parent.Client, egress (a fetch through the
// proxy with TLS inside the enclave, and a refused CONNECT that dials
// nothing), credentials (IMDSv2 role credentials pushed into the enclave;
// kms.go), kms (sealing and opening with Recipient calls through the
// proxy, a key for another PCR0 refused, no secret in the proxied bytes or
// logs; kms.go), attested tls (an outside client verifies the enclave's
// --tls-listen port through the parent's ingress, its plaintext canary
// never appears in the forwarded bytes, and TLS-terminating proxies are
// refused; atls.go) and logs (a fresh marker record and the access log of
// every step reach the sink). It fails naming the step.
//
// Options.Kill stops one component before the step that needs it, which is
// how the failure path is tested.
package devharness
