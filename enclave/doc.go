// Package enclave is the server side of enclavekit that runs inside a Nitro
// Enclave: the request server, its startup checks, and log forwarding to the
// parent.
//
// # Threat model
//
// The parent instance is an adversary. Every byte it sends is untrusted, and
// it may stall, reset or flood connections. The Server therefore:
//
//   - refuses a frame length above Config.MaxFrameSize before allocating
//     anything (a connection that sends ff ff ff ff is closed, others keep
//     being served);
//   - bounds every wait with a deadline: IdleTimeout for the first byte of a
//     request, ReadFrameTimeout for the rest of that frame (slowloris),
//     WriteTimeout for each response (a peer that never reads), and
//     HandlerTimeout for each handler;
//   - caps open connections (MaxConns; extra ones are closed at once and
//     counted, never queued) and in-flight requests per connection
//     (MaxInFlight; the server then stops reading that connection);
//   - bounds the memory of requests in flight across the whole server
//     (MaxInFlightBytes, 64 MiB by default): without it MaxConns ×
//     MaxInFlight × MaxFrameSize would be 8 GiB with the defaults; a
//     connection whose request does not fit waits, in arrival order;
//   - retries reads and writes interrupted by EINTR, treats a zero-length
//     read as "no progress" (retried a bounded number of times, then the
//     connection is closed with a logged reason, never taken for EOF), and
//     completes short writes;
//   - recovers panicking handlers (code 7 to the client, the stack in the
//     enclave log) and sends only generic errors across vsock: the code and
//     its fixed message. Details are logged inside the enclave.
//
// # Lifecycle
//
//	srv, err := enclave.New(enclave.Config{Addr: "tcp://127.0.0.1:0", Dev: true})
//	srv.Handle("echo", func(ctx context.Context, body []byte) ([]byte, error) { return body, nil })
//	err = srv.Listen(ctx)        // optional: learn srv.Addr() first
//	err = srv.Serve(ctx)         // until ctx is canceled, then drains
//
// New runs the startup checks, which fail closed: the kernel RNG must be the
// NSM's (rng_current = nsm-hwrng) and the clock source kvm-clock. They read
// sysfs through Config.SysFS so tests can fake them. Config.Dev (the --dev
// flag of cmd/enclaved) downgrades failures to loud warnings and makes
// enclavekit.health report dev=true.
//
// Listen (or Serve, or ServeListener, whichever comes first) then asks the
// NSM (Config.Attester) for an attestation document bound to a fresh nonce
// and runs three more checks, also failing closed: "nsm" (a document
// arrives within Config.NSMTimeout), "debug" (PCR0 is not all zeros, which
// would be a debug-mode enclave; Config.AllowDebug accepts one with a loud
// warning) and "clock" (the system clock is within Config.MaxClockSkew of
// the document's timestamp). Config.Dev downgrades these too. While
// serving, the clock is re-checked every Config.ClockCheckInterval: the
// skew is in Stats and health, and a skew past the bound is logged as an
// error. The checks' options are fields of Config, set by the enclave
// program (flags of cmd/enclaved, which are part of the measured image);
// nothing the parent sends can change them.
//
// # Trusted time and the NSM
//
// The NSM is the Nitro hypervisor, reached through /dev/nsm; the parent
// instance cannot see or alter that channel. A document read from it is
// therefore authentic without verifying its signature, and the checks do
// not verify it: they parse it, require the nonce they just sent (so the
// answer is fresh, not replayed by a faulty attester) and read its
// timestamp and PCR0. Verifying the chain to the AWS root would add
// nothing the hypervisor does not already guarantee, and would itself
// need a trusted clock. This reasoning holds only when Config.Attester is
// the local NSM, as in cmd/enclaved; an Attester that forwards to anything
// outside the enclave makes these checks meaningless.
//
// Server.TrustedClock gives the NSM-anchored time for code that must not
// rely on the system clock (attestation freshness, certificate validity):
// the last document's timestamp plus the monotonic time elapsed since,
// refused once the reading is older than two re-check intervals plus
// NSMTimeout.
//
// Serve stops accepting when its context is canceled (cmd/enclaved cancels
// it on SIGTERM and SIGINT), lets in-flight requests finish for up to
// Config.DrainTimeout, then cancels the rest and closes every connection.
// When Serve returns, no goroutine of the server is left.
//
// # Protocol
//
// Each frame carries one protocol.Envelope. Requests on a connection may be
// pipelined; each response echoes its request's id and may arrive in any
// order. A request envelope that fails to decode gets a bad-request response
// when its id (key 1) can be recovered; otherwise the connection is closed.
//
// Built-in methods: enclavekit.health (protocol.HealthResponse) and
// enclavekit.attest (protocol.AttestRequest → protocol.AttestResponse, from
// Config.Attester; each field at most 1024 bytes).
//
// # Attested TLS
//
// NewAttestedListener wraps any net.Listener so that it serves TLS 1.3 with
// an ECDSA P-256 key generated in the enclave and never serialized. The
// self-signed certificate carries, in the non-critical extension
// attest.ExtensionOID, an attestation document whose public_key is the
// certificate's SubjectPublicKeyInfo, renewed at half
// AttestedTLSConfig.MaxDocumentAge. A client may start the session with
// the Fresh request (attest.FreshRequest) to get a document whose nonce is
// the session's TLS exporter value. The handshake and the Fresh exchange
// run on a connection's first Read, bounded by HandshakeTimeout and
// FirstByteTimeout, so Server.ServeListener and net/http sit behind it
// unchanged. Clients verify with attest.ClientHandshake or attest.TLSDialer;
// docs/attested-tls.md has the wire format.
//
// # Randomness
//
// Randomness in the enclave comes from crypto/rand (getrandom(2)), whose
// kernel pool the startup check requires to be fed by nsm-hwrng. This package
// never calls the NSM GetRandom operation.
//
// # Logging
//
// LogHandler is an slog.Handler that writes to the console (stderr) and
// streams records to the parent's log sink (vsock://3:5001) as
// protocol.MethodLog frames, without ever blocking the server: its buffer is
// bounded, drops are counted and reported, and it re-dials with backoff.
package enclave
