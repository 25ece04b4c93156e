// Package parent holds what services on the parent instance of a Nitro
// enclave import: the client library that calls the enclave server, the
// ingress that forwards TCP connections into the enclave, and the sink that
// receives the enclave's log stream.
//
// # Client
//
// Dial opens a Client: a small pool of connections to an enclave server
// (vsock://CID:PORT, or tcp://HOST:PORT in development and tests). Each
// connection carries many requests at once, matched to their responses by
// request id (protocol v1). Call sends a CBOR-encoded request and decodes the
// response; CallRaw moves bytes. Context deadlines and cancellation are
// honoured per call. When a connection breaks, the calls in flight on it fail
// with an error matching ErrConnLost, and the next call dials a replacement.
// An error code sent by the enclave comes back as a *protocol.RemoteError,
// which matches its sentinel: errors.Is(err, protocol.ErrUnknownMethod).
//
// The enclave's answers are untrusted bytes: frames are size-limited,
// envelopes are decoded strictly, and a response with an id that was never
// issued on that connection breaks the connection instead of being delivered.
//
// Client.Attest asks the enclave for an attestation document over a fresh
// random nonce and returns it only after attest.Verify accepted it against
// the caller's roots, PCRs and maximum age. It fails closed.
//
// # Pool
//
// NewPool calls a set of enclaves: fixed addresses, or whatever a discovery
// function returns (re-asked every DiscoverInterval). Calls are spread
// round-robin over the enclaves in service. Every enclave is probed with
// enclavekit.health each ProbeInterval; FailThreshold consecutive failed
// probes take it out of service and one successful probe puts it back. A
// failed call is retried on another enclave only when the caller passes
// Idempotent(), and only for failures another enclave may not have (the
// connection broke, the enclave was unreachable, or it answered
// unavailable); an enclave's other answers are final.
//
// # Ingress
//
// Ingress accepts TCP connections on the parent and forwards each, byte for
// byte, to an address in the enclave (TLS terminates in the enclave). It caps
// the number of connections, closes connections idle in both directions,
// propagates half-close (a client's FIN becomes a CloseWrite towards the
// enclave and the other way round) and can prepend a PROXY protocol v2 header
// so the enclave learns the client's address.
//
// # Log sink
//
// LogSink accepts the enclave's log stream (frames of protocol.MethodLog
// envelopes carrying protocol.LogRecord bodies) and re-emits every record
// through a slog.Handler of the parent, with an "enclave" attribute naming
// the sender. Records are untrusted: sizes and attribute counts are bounded
// and control characters are stripped before anything reaches the handler.
// The sink keeps accepting, so an enclave that restarts simply reconnects.
package parent
