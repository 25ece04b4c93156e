// Package deptest holds the architecture test: the rules of
// docs/architecture.md about which package may import which, checked
// against the import graph that go list reports, so that a change that
// breaks one fails make test instead of waiting for a reviewer.
//
// The rules apply to production code (what non-test files import,
// transitively):
//
//   - enclave/... never imports parent/..., and parent/... never imports
//     enclave/...: the two halves meet only in protocol/ and transport/.
//   - protocol/... never imports transport/... (the wire format sits below
//     the sockets).
//   - parent/ingress and parent/logsink import nothing of parent/... but
//     parent/internal/...: the servers stand apart from the client library
//     and from each other.
//   - A production package imports neither the module's internal/
//     packages nor a test emulator (attest/nsmtest, enclave/kms/kmstest,
//     parent/imdstest). Not production, so exempt: internal/devharness,
//     internal/soak, internal/vsocktest, internal/deptest, examples/...,
//     and the emulators themselves.
//
// Documented exceptions: cmd/enclavekit imports internal/devharness and
// internal/soak (enclavekit dev and enclavekit soak) and nothing else of
// internal/ or the emulators directly; cmd/enclaved imports
// internal/enclaved, the server program it shares with the harness; and
// internal/enclaved links attest/nsmtest only in the development build:
// built with the tag enclavekit_production, as the enclave image is, it and
// cmd/enclaved link no emulator at all.
package deptest
