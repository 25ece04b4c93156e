package protocol

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// The envelope codec has a fast path for the one shape that matters on the
// hot path: the canonical encoding MarshalEnvelope itself produces. Encoding
// always takes it (AppendEnvelope writes RFC 8949 core deterministic CBOR by
// hand, byte for byte what cbor.CoreDetEncOptions gives; the tests compare
// the two). Decoding takes it only for input in canonical form (a definite
// map of at most 6 pairs whose keys are 0..5 in ascending order, shortest
// heads, each value of its key's CBOR type, valid UTF-8, no trailing bytes);
// anything else, valid or not, goes to the strict library decoder, so the
// set of accepted envelopes and every error message stay as they were.

// AppendEnvelope validates e, appends its canonical encoding (as
// MarshalEnvelope returns it) to dst and returns the extended slice. It lets
// a caller encode into a reused buffer. Version 0 is encoded as Version.
func AppendEnvelope(dst []byte, e *Envelope) ([]byte, error) {
	if e.Version == 0 {
		c := *e
		c.Version = Version
		e = &c
	}
	if err := e.Validate(); err != nil {
		return dst, err
	}
	return appendEnvelope(dst, e), nil
}

// EnvelopeSize validates e as MarshalEnvelope does and returns the length
// of its canonical encoding (Version 0 counted as Version): what a frame of
// it will hold, known before it is encoded.
func EnvelopeSize(e *Envelope) (int, error) {
	if e.Version == 0 {
		c := *e
		c.Version = Version
		e = &c
	}
	if err := e.Validate(); err != nil {
		return 0, err
	}
	return envelopeSize(e), nil
}

func envelopeSize(e *Envelope) int {
	v := e.Version
	if v == 0 {
		v = Version
	}
	n := 1 + 1 + headLen(v) + 1 + headLen(e.ID)
	if e.Method != "" {
		n += 1 + headLen(uint64(len(e.Method))) + len(e.Method)
	}
	if len(e.Body) > 0 {
		n += 1 + headLen(uint64(len(e.Body))) + len(e.Body)
	}
	if e.Code != 0 {
		n += 1 + headLen(uint64(e.Code))
	}
	if e.Message != "" {
		n += 1 + headLen(uint64(len(e.Message))) + len(e.Message)
	}
	return n
}

func appendEnvelope(b []byte, e *Envelope) []byte {
	pairs := 2
	if e.Method != "" {
		pairs++
	}
	if len(e.Body) > 0 {
		pairs++
	}
	if e.Code != 0 {
		pairs++
	}
	if e.Message != "" {
		pairs++
	}
	b = append(b, 0xa0|byte(pairs), 0)
	b = appendHead(b, 0, e.Version)
	b = append(b, 1)
	b = appendHead(b, 0, e.ID)
	if e.Method != "" {
		b = append(b, 2)
		b = appendHead(b, 3, uint64(len(e.Method)))
		b = append(b, e.Method...)
	}
	if len(e.Body) > 0 {
		b = append(b, 3)
		b = appendHead(b, 2, uint64(len(e.Body)))
		b = append(b, e.Body...)
	}
	if e.Code != 0 {
		b = append(b, 4)
		b = appendHead(b, 0, uint64(e.Code))
	}
	if e.Message != "" {
		b = append(b, 5)
		b = appendHead(b, 3, uint64(len(e.Message)))
		b = append(b, e.Message...)
	}
	return b
}

// headLen is the length of the shortest CBOR head carrying v.
func headLen(v uint64) int {
	switch {
	case v < 24:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffffffff:
		return 5
	}
	return 9
}

// appendHead appends the shortest head of major type major with argument v.
func appendHead(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= 0xff:
		return append(b, m|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), v)
}

// readHead reads a head in shortest form at b[0:]; ok is false for any
// other form (indefinite, reserved, or a longer head than needed).
func readHead(b []byte) (major byte, v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, 0, false
	}
	major, ai := b[0]>>5, b[0]&0x1f
	switch {
	case ai < 24:
		return major, uint64(ai), 1, true
	case ai == 24 && len(b) >= 2:
		v = uint64(b[1])
		return major, v, 2, v >= 24
	case ai == 25 && len(b) >= 3:
		v = uint64(binary.BigEndian.Uint16(b[1:]))
		return major, v, 3, v > 0xff
	case ai == 26 && len(b) >= 5:
		v = uint64(binary.BigEndian.Uint32(b[1:]))
		return major, v, 5, v > 0xffff
	case ai == 27 && len(b) >= 9:
		v = binary.BigEndian.Uint64(b[1:])
		return major, v, 9, v > 0xffffffff
	}
	return 0, 0, 0, false
}

// decodeEnvelopeFast decodes a canonical envelope. ok false means "not in
// canonical form", not "invalid": the caller then runs the strict decoder.
// On success present has bit k set for each key k; the method, message and
// body are copied out of b.
func decodeEnvelopeFast(b []byte) (e Envelope, present uint8, ok bool) {
	if len(b) == 0 || b[0]>>5 != 5 {
		return e, 0, false
	}
	pairs := int(b[0] & 0x1f)
	if pairs > 6 {
		return e, 0, false
	}
	p := 1
	last := -1
	for range pairs {
		if p >= len(b) {
			return e, 0, false
		}
		key := int(b[p])
		if key > 5 || key <= last {
			return e, 0, false
		}
		last = key
		p++
		major, v, n, hok := readHead(b[p:])
		if !hok || major != envelopeKeyTypes[key] {
			return e, 0, false
		}
		p += n
		if major != 0 {
			if v > uint64(len(b)-p) {
				return e, 0, false
			}
		}
		switch key {
		case 0:
			e.Version = v
		case 1:
			e.ID = v
		case 4:
			if v > uint64(^Code(0)) {
				return e, 0, false
			}
			e.Code = Code(v)
		case 2, 5:
			s := b[p : p+int(v)]
			if !utf8.Valid(s) {
				return e, 0, false
			}
			if key == 2 {
				e.Method = internMethod(s)
			} else {
				e.Message = string(s)
			}
			p += int(v)
		case 3:
			e.Body = append(make([]byte, 0, int(v)), b[p:p+int(v)]...)
			p += int(v)
		}
		present |= 1 << key
	}
	if p != len(b) {
		return e, 0, false
	}
	return e, present, true
}

// internMethod returns the built-in method names without allocating.
func internMethod(s []byte) string {
	switch string(s) {
	case MethodHealth:
		return MethodHealth
	case MethodAttest:
		return MethodAttest
	case MethodLog:
		return MethodLog
	}
	return string(s)
}

// WriteEnvelope validates e and writes its canonical encoding as one frame,
// encoded straight into the writer's reused buffer: the same bytes as
// WriteFrame(MarshalEnvelope(e)) without a payload allocation per frame
// (envelopes over 64 KiB are encoded into a buffer of their own, as
// before). An envelope over the limit is refused with ErrFrameTooLarge
// before anything is written. Version 0 is encoded as Version.
func (fw *FrameWriter) WriteEnvelope(e *Envelope) error {
	if e.Version == 0 {
		c := *e
		c.Version = Version
		e = &c
	}
	if err := e.Validate(); err != nil {
		return err
	}
	n := envelopeSize(e)
	if n > fw.max {
		return fmt.Errorf("%w: payload is %d bytes, the limit is %d", ErrFrameTooLarge, n, fw.max)
	}
	if n > coalesceLimit {
		return fw.WriteFrame(appendEnvelope(make([]byte, 0, n), e))
	}
	fw.buf = binary.BigEndian.AppendUint32(fw.buf[:0], uint32(n))
	fw.buf = appendEnvelope(fw.buf, e)
	return writeAll(fw.w, fw.buf)
}
