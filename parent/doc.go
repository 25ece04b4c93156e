// Package parent holds what services on the parent instance of a Nitro
// enclave import to call the enclave: the client library that calls the
// enclave server (one enclave, or a Pool of them), attestation of the
// enclave, and the push of the instance role's credentials into it.
// Sanitize cleans text from the enclave for logs and terminals;
// ServeMetrics serves the Prometheus metrics of the parent's commands.
//
// The rest of the parent side has packages of its own: parent/ingress
// forwards outside TCP connections into the enclave, parent/logsink
// receives the enclave's log stream, parent/proxy is the egress proxy and
// parent/supervisor runs all of them for "enclavekit run".
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
package parent
