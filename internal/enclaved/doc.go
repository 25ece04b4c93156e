// Package enclaved is the reference enclave server's program: flags,
// logging, startup checks, attester and server, shared by cmd/enclaved and
// the development harness (enclavekit dev) so both run one code path.
package enclaved
