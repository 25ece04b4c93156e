// Package enclaved is the reference enclave server's program: flags,
// logging, startup checks, attester and server, shared by cmd/enclaved and
// the development harness (enclavekit dev) so both run one code path.
//
// Only emulator_dev.go names the NSM emulator (attest/nsmtest); the build
// tag ProductionTag leaves it out of the enclave image's binary, and
// internal/deptest checks that nothing else brings an emulator in.
package enclaved
