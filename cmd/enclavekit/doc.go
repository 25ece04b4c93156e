// Command enclavekit is the parent-side tool of enclavekit.
//
//	enclavekit dev          the whole system on loopback and a scripted session (make dev)
//	enclavekit call         call a method of an enclave server (JSON in, JSON out)
//	enclavekit health       an enclave server's health
//	enclavekit attest       verify or inspect an attestation document
//	enclavekit proxy        the egress proxy with allowlist (--config FILE)
//	enclavekit vsock-proxy  drop-in for AWS vsock-proxy's command line
//	enclavekit ingress      forward parent TCP connections into the enclave
//	enclavekit logs         the log sink for the enclave's log stream
//	enclavekit eif          build, describe and measure EIF images
//	enclavekit run          supervise up to four enclaves and their parent components (--config FILE)
//
// Run "enclavekit help" for the list and "enclavekit COMMAND -h" for a
// command's flags. Exit codes: 0 success, 1 the operation failed (a remote
// error, a failed verification), 2 bad usage.
package main
