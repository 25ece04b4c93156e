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
package transport
