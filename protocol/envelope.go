package protocol

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Version is the protocol version carried in every envelope.
const Version = 1

// MaxMethodLen is the longest method name, in bytes.
const MaxMethodLen = 128

// ErrBadEnvelope is wrapped by every envelope decoding and validation error.
var ErrBadEnvelope = errors.New("protocol: bad envelope")

// Envelope is the protocol v1 message: a CBOR map with small integer keys.
// A request has a Method and no Code; a response echoes the request's ID,
// has no Method, and has a non-zero Code (and a generic Message) on failure.
type Envelope struct {
	Version uint64 `cbor:"0,keyasint"`
	ID      uint64 `cbor:"1,keyasint"`
	Method  string `cbor:"2,keyasint,omitempty"`
	Body    []byte `cbor:"3,keyasint,omitempty"`
	Code    Code   `cbor:"4,keyasint,omitempty"`
	Message string `cbor:"5,keyasint,omitempty"`
}

// IsRequest reports whether e is a request (it names a method).
func (e *Envelope) IsRequest() bool { return e.Method != "" }

// Err returns the response's error as a *RemoteError, or nil on success.
func (e *Envelope) Err() error {
	if e.Code == CodeOK {
		return nil
	}
	return &RemoteError{Code: e.Code, Message: e.Message}
}

// Validate checks the rules that the CBOR schema alone cannot express.
func (e *Envelope) Validate() error {
	switch {
	case e.Version != Version:
		return fmt.Errorf("%w: version %d, want %d (key 0)", ErrBadEnvelope, e.Version, Version)
	case len(e.Method) > MaxMethodLen:
		return fmt.Errorf("%w: method is %d bytes, the limit is %d (key 2)", ErrBadEnvelope, len(e.Method), MaxMethodLen)
	case !e.Code.Valid():
		return fmt.Errorf("%w: error code %d is not defined in protocol v1 (key 4)", ErrBadEnvelope, e.Code)
	case e.Method != "" && (e.Code != CodeOK || e.Message != ""):
		return fmt.Errorf("%w: a request (key 2) must not carry an error code or message (keys 4, 5)", ErrBadEnvelope)
	case e.Code == CodeOK && e.Message != "":
		return fmt.Errorf("%w: error message (key 5) without an error code (key 4)", ErrBadEnvelope)
	}
	return nil
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
		DefaultMapType:    reflect.TypeOf(map[uint64]any(nil)),
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// MarshalEnvelope validates e and encodes it canonically (RFC 8949 core
// deterministic encoding). Version 0 is filled in as Version.
func MarshalEnvelope(e *Envelope) ([]byte, error) {
	if e.Version == 0 {
		c := *e
		c.Version = Version
		e = &c
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return encMode.Marshal(e)
}

// UnmarshalEnvelope decodes untrusted bytes into an envelope. It rejects
// duplicate keys, unknown keys, indefinite-length items, tags, invalid UTF-8,
// trailing bytes, a missing version or id, and anything Validate rejects;
// every error wraps
// ErrBadEnvelope. On error the returned envelope is the zero value.
func UnmarshalEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if err := decMode.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	// The id has no zero default: an envelope without key 1 is refused.
	// Only id 0 needs the second look.
	if e.ID == 0 {
		if _, ok := RecoverID(b); !ok {
			return Envelope{}, fmt.Errorf("%w: missing request id (key 1)", ErrBadEnvelope)
		}
	}
	return e, nil
}

// Marshal encodes v (a request or response body) with the same canonical
// CBOR encoding as envelopes. Use it for typed bodies.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes an untrusted body with the strict decoder used for
// envelopes, but without the envelope's small size limits: duplicate keys,
// unknown struct fields, indefinite lengths and tags are rejected.
func Unmarshal(b []byte, v any) error {
	if err := bodyDecMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("protocol: decoding body: %w", err)
	}
	return nil
}

var bodyDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
		MaxArrayElements:  1 << 16,
		MaxMapPairs:       1 << 16,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()
