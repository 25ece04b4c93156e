// Package logsink is the parent instance's receiver of enclave logs. An
// enclave has no console worth reading in production, so its slog handler
// (enclave.NewLogHandler) streams every record over vsock to the parent
// (the enclave dials vsock://3:5001, the parent's CID 3); the sink
// listens there (vsock://any:5001, DefaultListen; tcp://127.0.0.1:PORT in
// development and tests) and re-emits each record through a slog.Handler
// of the parent, with an "enclave" attribute naming the sender.
//
// # How it fits
//
// "enclavekit logs" runs one Sink and prints the records;
// "enclavekit run" (parent/supervisor) runs one per enclave and keeps its
// recent records. The sink imports neither the client package parent nor
// enclave: the two halves meet only in protocol (the frames carry
// protocol.MethodLog envelopes with protocol.LogRecord bodies) and
// transport.
//
// # Untrusted records
//
// Everything that arrives is untrusted. Frames are size-limited
// (MaxFrameSize); DecodeRecord decodes strictly and a frame that does not
// decode is dropped and counted; the message and attribute text are cut to
// MaxMessage and MaxValue with control and format characters removed,
// attributes beyond MaxAttrs are counted, not kept, and the enclave's
// attributes go in an "attrs" group so they cannot pose as the parent's
// own. Only enclave CIDs (AllowCIDs; never the parent's own CID 3) may
// connect, and MaxConns and MaxConnsPerCID bound the streams. The sink
// keeps accepting, so an enclave that restarts simply reconnects; its
// stale stream is the one closed to make room. Stats counts what it did;
// Collectors exports the counts to Prometheus.
package logsink
