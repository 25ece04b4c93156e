package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame size limits of protocol v1.
const (
	// HeaderSize is the length of the big-endian uint32 length prefix.
	HeaderSize = 4
	// DefaultMaxFrameSize is the payload limit used when none is configured: 1 MiB.
	DefaultMaxFrameSize = 1 << 20
	// MaxFrameSizeLimit is the largest payload limit that may be configured: 64 MiB.
	// A declared length above it is never valid in protocol v1.
	MaxFrameSizeLimit = 64 << 20
)

// Sentinel errors of the frame codec. Each is distinct, so callers can tell
// a peer that is not speaking protocol v1 from one that sent a legal but
// unwanted frame, and both from a connection cut in the middle of a frame.
var (
	// ErrFrameTooLarge: the declared or given length exceeds the configured
	// maximum (which is at most MaxFrameSizeLimit).
	ErrFrameTooLarge = errors.New("protocol: frame exceeds the configured maximum size")
	// ErrFrameLengthInvalid: the declared length exceeds MaxFrameSizeLimit, the
	// protocol's hard ceiling; the peer is not speaking protocol v1 (or is
	// hostile), e.g. a length prefix of ff ff ff ff.
	ErrFrameLengthInvalid = errors.New("protocol: frame length exceeds the protocol v1 ceiling of 64 MiB")
	// ErrFrameTruncated: the stream ended inside a frame. Errors carrying it
	// also match io.ErrUnexpectedEOF.
	ErrFrameTruncated = errors.New("protocol: stream ended inside a frame")
)

// growStep bounds how far a payload buffer grows ahead of the bytes that have
// actually arrived, so a peer that declares a large (but allowed) length and
// then stalls costs at most this much memory, not the declared size.
const growStep = 64 << 10

// checkMax validates a configured maximum and returns the effective one.
func checkMax(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultMaxFrameSize, nil
	case limit < 0 || limit > MaxFrameSizeLimit:
		return 0, fmt.Errorf("protocol: max frame size %d out of range: want 1..%d (64 MiB), or 0 for the default of %d", limit, MaxFrameSizeLimit, DefaultMaxFrameSize)
	}
	return limit, nil
}

// FrameReader reads length-prefixed frames from a stream and reuses one
// buffer for their payloads, so steady-state reading allocates nothing.
// It is not safe for concurrent use.
type FrameReader struct {
	r   io.Reader
	max int
	hdr [HeaderSize]byte
	buf []byte
}

// NewFrameReader returns a reader of frames from r whose payloads are at most
// max bytes. max 0 means DefaultMaxFrameSize; max above MaxFrameSizeLimit is an error.
func NewFrameReader(r io.Reader, max int) (*FrameReader, error) {
	m, err := checkMax(max)
	if err != nil {
		return nil, err
	}
	return &FrameReader{r: r, max: m}, nil
}

// Max returns the payload limit in bytes.
func (fr *FrameReader) Max() int { return fr.max }

// ReadFrame reads the next frame and returns its payload. The returned slice
// is only valid until the next call to ReadFrame; copy it to keep it.
// At a clean end of stream (no byte of a new frame read) it returns io.EOF.
func (fr *FrameReader) ReadFrame() ([]byte, error) {
	p, err := readFrame(fr.r, &fr.hdr, fr.buf[:0], fr.max)
	if p != nil {
		fr.buf = p
	}
	return p, err
}

// ReadFrame reads one frame from r into buf's backing array (growing it as
// the payload arrives, never ahead of the data by more than 64 KiB) and
// returns the payload. max is the payload limit; 0 means DefaultMaxFrameSize.
// A declared length above max is reported before anything is allocated or
// read past the header: with ErrFrameLengthInvalid when it exceeds the
// protocol ceiling, else with ErrFrameTooLarge. A stream that ends inside a
// frame gives an error matching both ErrFrameTruncated and
// io.ErrUnexpectedEOF; one that ends before a frame gives io.EOF.
func ReadFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	m, err := checkMax(max)
	if err != nil {
		return nil, err
	}
	var hdr [HeaderSize]byte
	return readFrame(r, &hdr, buf[:0], m)
}

func readFrame(r io.Reader, hdr *[HeaderSize]byte, buf []byte, limit int) ([]byte, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%w: %w: got part of the 4-byte length prefix", ErrFrameTruncated, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSizeLimit {
		return nil, fmt.Errorf("%w: peer declared %d bytes", ErrFrameLengthInvalid, n)
	}
	if int(n) > limit {
		return nil, fmt.Errorf("%w: peer declared %d bytes, the limit is %d", ErrFrameTooLarge, n, limit)
	}
	size := int(n)
	if cap(buf) >= size {
		buf = buf[:size]
		if got, err := io.ReadFull(r, buf); err != nil {
			return nil, truncated(err, got, size)
		}
		return buf, nil
	}
	if size <= growStep {
		buf = make([]byte, size)
		if got, err := io.ReadFull(r, buf); err != nil {
			return nil, truncated(err, got, size)
		}
		return buf, nil
	}
	// The declared length is untrusted: read it in chunks of growStep, each
	// allocated only once the previous one is full, so that memory is never
	// more than growStep ahead of the bytes that have arrived. (Doubling a
	// single buffer would run up to the received size ahead: 32 MiB sent
	// would cost 64 MiB.) The payload is assembled once it is complete.
	var chunks [][]byte
	got := 0
	for got < size {
		c := make([]byte, min(growStep, size-got))
		if m, err := io.ReadFull(r, c); err != nil {
			return nil, truncated(err, got+m, size)
		}
		chunks = append(chunks, c)
		got += len(c)
	}
	buf = make([]byte, 0, size)
	for _, c := range chunks {
		buf = append(buf, c...)
	}
	return buf, nil
}

func truncated(err error, got, want int) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %w: payload of %d bytes declared, stream ended after %d", ErrFrameTruncated, io.ErrUnexpectedEOF, want, got)
	}
	return err
}

// FrameWriter writes length-prefixed frames to a stream. Small frames are
// written with a single Write call (one syscall, one packet where possible);
// its buffer is reused, so steady-state writing allocates nothing.
// It is not safe for concurrent use.
type FrameWriter struct {
	w   io.Writer
	max int
	buf []byte
	// hdr holds the length prefix of a frame written with two calls; a
	// local array would escape to the heap through the io.Writer call.
	hdr [HeaderSize]byte
}

// coalesceLimit is the largest payload copied next to its header for a single
// Write; larger payloads are written with two calls rather than copied.
const coalesceLimit = 64 << 10

// NewFrameWriter returns a writer of frames to w whose payloads are at most
// max bytes. max 0 means DefaultMaxFrameSize; max above MaxFrameSizeLimit is an error.
func NewFrameWriter(w io.Writer, max int) (*FrameWriter, error) {
	m, err := checkMax(max)
	if err != nil {
		return nil, err
	}
	return &FrameWriter{w: w, max: m}, nil
}

// WriteFrame writes payload as one frame. A payload over the limit is refused
// with ErrFrameTooLarge before anything is written, so the stream stays usable.
// After any other error the stream may hold part of a frame and must be closed.
func (fw *FrameWriter) WriteFrame(payload []byte) error {
	if len(payload) > fw.max {
		return fmt.Errorf("%w: payload is %d bytes, the limit is %d", ErrFrameTooLarge, len(payload), fw.max)
	}
	if len(payload) <= coalesceLimit {
		fw.buf = binary.BigEndian.AppendUint32(fw.buf[:0], uint32(len(payload)))
		fw.buf = append(fw.buf, payload...)
		return writeAll(fw.w, fw.buf)
	}
	binary.BigEndian.PutUint32(fw.hdr[:], uint32(len(payload)))
	if err := writeAll(fw.w, fw.hdr[:]); err != nil {
		return err
	}
	return writeAll(fw.w, payload)
}

// writeAll reports a short write without an error (which breaks the
// io.Writer contract) as io.ErrShortWrite rather than leave a torn frame
// on the stream unnoticed.
func writeAll(w io.Writer, b []byte) error {
	n, err := w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// WriteFrame writes payload to w as one frame, allocating a small buffer per
// call; use a FrameWriter on hot paths. max 0 means DefaultMaxFrameSize.
func WriteFrame(w io.Writer, payload []byte, max int) error {
	fw, err := NewFrameWriter(w, max)
	if err != nil {
		return err
	}
	return fw.WriteFrame(payload)
}
