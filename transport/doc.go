// Package transport gives one address syntax for the two ways enclavekit
// components talk: vsock between a Nitro enclave and its parent instance,
// and TCP for local development and tests.
//
//	vsock://CID:PORT   CID a number or any, parent (3), host (2), local (1)
//	tcp://HOST:PORT    e.g. tcp://127.0.0.1:5000, tcp://[::1]:0
//
// Listen returns a net.Listener and Dial a net.Conn for either form, so the
// code above this package runs the same path over loopback TCP in tests as
// over vsock in production. vsock uses github.com/mdlayher/vsock and works on
// Linux only; elsewhere vsock addresses fail with a clear error while TCP works,
// so parent-side tools build on macOS.
//
// The package also holds the connection plumbing that the enclave's and
// the parent's servers share, since both may import it:
//
//   - Acceptor is the one accept step: it retries only transient accept
//     errors (out of descriptors or memory, an aborted handshake, an
//     interruption, a timeout; see TransientAcceptError) after a pause
//     doubling from 5 ms to 1 s, logs those retries rate-limited, and tells
//     a clean stop (ErrStopped) from a broken listener.
//   - LogLimiter rate-limits a per-connection log line (a refusal, say):
//     the first at once, then one per interval with the count held back.
//   - Relay copies between two connections both ways: half close, an idle
//     watchdog, write deadlines, splicing where the kernel can, pooled
//     buffers, byte counters, and hooks for the ingress's rules. A relayed
//     TCP, Unix or vsock connection waiting for bytes holds neither a
//     buffer nor a splice pipe, so idle connections cost only their
//     sockets.
//
// transport imports nothing of enclavekit: protocol, enclave and parent
// sit above it.
package transport
