// Package ingress is the parent instance's TCP ingress: it accepts
// connections from outside clients on a parent port (tcp://0.0.0.0:443)
// and forwards each, byte for byte, to a raw stream listener of the
// application in the enclave (vsock://16:443 in production,
// tcp://127.0.0.1:8443 in development and tests). TLS, if any, terminates
// in the enclave: the parent sees only ciphertext.
//
// # How it fits
//
// The enclave has no network; the ingress is its way in, as parent/proxy
// is its way out. "enclavekit ingress" runs one Server from the command
// line and "enclavekit run" (parent/supervisor) runs one per configured
// port. Services that call the enclave's own protocol port use the client
// in package parent instead. The ingress imports neither parent nor
// enclave: the two halves meet only in protocol and transport.
//
// # Behaviour
//
// New validates a Config and returns a Server; Serve forwards the
// connections of a listener until its context ends (ListenAndServe opens
// Config.Listen first). The server caps the connections forwarded at
// once (MaxConns, where a newcomer evicts the connection idle or stalled
// the longest) and per source address (MaxConnsPerSource), disconnects a
// client that trickles a message slower than MinRate, closes connections
// idle in both directions, propagates half-close (a client's FIN becomes
// a CloseWrite towards the enclave and the other way round) and can
// prepend a PROXY protocol v2 header (protocol/proxyproto) so the enclave
// learns the client's address. Stats and LimitStats count what it did;
// Collectors exports them to Prometheus.
//
// Every forwarded connection runs through transport.Relay, the relay the
// egress proxy uses too (half-close, idle watchdog, splicing where the
// kernel can, pooled buffers): the ingress watches the client's bytes for
// message boundaries through its Observe hook, applies MinRate as its
// ReadDeadline, and ranks connections for eviction by its Activity.
package ingress
