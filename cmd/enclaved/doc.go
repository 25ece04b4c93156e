// Command enclaved is the reference enclavekit server that runs inside a
// Nitro Enclave. It serves the built-in methods enclavekit.health and
// enclavekit.attest, plus "echo" (returns the request body) for tests.
//
// Usage:
//
//	enclaved [flags]
//
//	--listen ADDR             listen address (vsock://any:5000)
//	--dev                     development override: startup checks warn instead of failing
//	--nsm device|emulated     attester: /dev/nsm, or the NSM emulator (needs --dev)
//	--log-sink ADDR|none      parent log sink (vsock://3:5001); logs also go to stderr
//	--log-level LEVEL         debug, info, warn or error (info)
//	--max-conns N, --max-in-flight N, --max-in-flight-bytes BYTES, --max-frame-size BYTES
//	--read-header-timeout D, --idle-timeout D, --write-timeout D,
//	--handler-timeout D, --drain-timeout D
//	--allow-debug             start even in a debug-mode enclave (all-zero PCR0), with a warning
//	--max-clock-skew D        largest system clock vs NSM time difference (5s)
//	--clock-check-interval D  time between clock re-checks against the NSM (1m)
//	--nsm-timeout D           time the NSM gets to answer each check (5s)
//
// Before listening it checks that the kernel RNG is nsm-hwrng and the clock
// source kvm-clock, then asks the NSM for an attestation document and checks
// that it answers, that PCR0 is not all zeros (debug mode) and that the
// system clock is within --max-clock-skew of the document's timestamp. It
// exits with status 1 naming the failed check, what it found and what is
// required if not (unless --dev). With --nsm emulated it prints the
// emulator's PCR0-2. On SIGTERM or SIGINT it stops
// accepting, drains in-flight requests for up to --drain-timeout and exits 0.
// Once listening it prints "enclaved: listening on ADDR" to stdout.
//
// The enclaved that goes into the enclave image is built with
// -tags=enclavekit_production (make enclaved, build/Dockerfile): it links no
// emulator, and --nsm emulated answers with a one-line refusal. Built
// without the tag (go run ./cmd/enclaved --dev --nsm emulated, make dev)
// it keeps the NSM emulator for development.
package main
