package protocol

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"runtime"
)

// ErrBadPadding is returned by Unpad when the input is not the output of Pad.
var ErrBadPadding = errors.New("protocol: invalid padding")

// Equal reports whether a and b hold the same bytes. The time it takes depends
// only on the lengths of a and b, never on their contents, so it is safe for
// comparing MACs, nonces and tokens. Two empty or nil slices are equal.
func Equal(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}

// Pad returns b extended to the next multiple of bucket bytes, so that an
// observer of the result (such as the parent, which sees frame lengths) learns
// only which bucket the length falls in. It uses the ISO/IEC 7816-4 scheme: a
// 0x80 byte followed by zero bytes, so at least one byte is always added and
// a full bucket is added to an input that is already a multiple of bucket.
// Pad appends to b's backing array when it has room, like append.
// bucket must be between 1 and 64 MiB.
func Pad(b []byte, bucket int) ([]byte, error) {
	if bucket < 1 || bucket > MaxFrameSizeLimit {
		return nil, fmt.Errorf("protocol: pad bucket %d out of range: want 1..%d", bucket, MaxFrameSizeLimit)
	}
	n := len(b) + 1
	if r := n % bucket; r != 0 {
		n += bucket - r
	}
	out := append(b, 0x80)
	for len(out) < n {
		out = append(out, 0)
	}
	return out, nil
}

// Unpad reverses Pad: it returns the prefix of b before the 0x80 marker. The
// scan runs over every byte of b with no data-dependent branches, so its
// timing reveals len(b) but not where the message ends. The result aliases b.
func Unpad(b []byte, bucket int) ([]byte, error) {
	if bucket < 1 || bucket > MaxFrameSizeLimit {
		return nil, fmt.Errorf("protocol: unpad bucket %d out of range: want 1..%d", bucket, MaxFrameSizeLimit)
	}
	if len(b) == 0 || len(b)%bucket != 0 {
		return nil, fmt.Errorf("%w: length %d is not a positive multiple of the bucket size %d", ErrBadPadding, len(b), bucket)
	}
	// Walk from the end. While still in the run of trailing zeros ("inZeros"),
	// a zero byte continues the run; the first non-zero byte must be 0x80 and
	// marks the end of the message.
	inZeros := 1
	markerAt := 0
	valid := 0
	for i := len(b) - 1; i >= 0; i-- {
		isZero := subtle.ConstantTimeByteEq(b[i], 0)
		isMarker := subtle.ConstantTimeByteEq(b[i], 0x80)
		found := inZeros & (1 ^ isZero) // first non-zero byte from the end
		markerAt = subtle.ConstantTimeSelect(found, i, markerAt)
		valid = subtle.ConstantTimeSelect(found, isMarker, valid)
		inZeros &= isZero
	}
	// Pad adds 1..bucket bytes; more padding than that is not its output.
	valid &= subtle.ConstantTimeLessOrEq(len(b)-markerAt, bucket)
	if valid != 1 {
		return nil, fmt.Errorf("%w: want a 0x80 marker followed by fewer than %d zero bytes", ErrBadPadding, bucket)
	}
	return b[:markerAt], nil
}

// Zero overwrites b with zeros. Use it to wipe key material as soon as it is
// no longer needed. The Go runtime may have copied the bytes elsewhere (on a
// stack grow or by the garbage collector), so Zero limits exposure; it does not
// guarantee that no copy remains.
func Zero(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}
