package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"unicode/utf8"

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
	case !utf8.ValidString(e.Method):
		return fmt.Errorf("%w: method is not valid UTF-8 (key 2)", ErrBadEnvelope)
	case !utf8.ValidString(e.Message):
		return fmt.Errorf("%w: error message is not valid UTF-8 (key 5)", ErrBadEnvelope)
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
	return appendEnvelope(make([]byte, 0, envelopeSize(e)), e), nil
}

// UnmarshalEnvelope decodes untrusted bytes into an envelope. It rejects
// duplicate keys, unknown keys, indefinite-length items, tags, invalid UTF-8,
// trailing bytes, a missing version or id, a value of the wrong CBOR type
// (null, undefined, a float or a simple value anywhere; an array for the
// body), an empty method, a request that carries key 4 or 5 at all, a message
// without a non-zero code, and anything Validate rejects; every error wraps
// ErrBadEnvelope. On error the returned envelope is the zero value.
func UnmarshalEnvelope(b []byte) (Envelope, error) {
	e, present, ok := decodeEnvelopeFast(b)
	if !ok {
		var err error
		if e, present, err = decodeEnvelopeStrict(b); err != nil {
			return Envelope{}, err
		}
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	switch {
	case present&(1<<1) == 0:
		// The id has no zero default: an envelope without key 1 is refused.
		return Envelope{}, fmt.Errorf("%w: missing request id (key 1)", ErrBadEnvelope)
	case present&(1<<2) != 0 && e.Method == "":
		// An empty method would turn a request into a response.
		return Envelope{}, fmt.Errorf("%w: empty method (key 2): a method is 1..%d bytes", ErrBadEnvelope, MaxMethodLen)
	case present&(1<<2) != 0 && present&(1<<4|1<<5) != 0:
		return Envelope{}, fmt.Errorf("%w: a request (key 2) must not carry an error code or message (keys 4, 5)", ErrBadEnvelope)
	case present&(1<<5) != 0 && e.Code == CodeOK:
		return Envelope{}, fmt.Errorf("%w: error message (key 5) without an error code (key 4)", ErrBadEnvelope)
	}
	return e, nil
}

// decodeEnvelopeStrict decodes any envelope with the strict library
// decoder: the path for input that is not in canonical form.
func decodeEnvelopeStrict(b []byte) (Envelope, uint8, error) {
	var e Envelope
	if err := decMode.Unmarshal(b, &e); err != nil {
		return Envelope{}, 0, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	// The CBOR decoder converts more than protocol v1 allows (null,
	// undefined and other simple values to zero or to their number, an
	// array of small integers to bytes) and cannot tell an absent key from
	// a zero value. Look at the map itself for both.
	present, err := checkEnvelopeTypes(b)
	if err != nil {
		return Envelope{}, 0, err
	}
	return e, present, nil
}

// envelopeKeyTypes is the CBOR major type (RFC 8949 §3.1) of each
// envelope key's value: 0 unsigned integer, 2 byte string, 3 text string.
var envelopeKeyTypes = [...]byte{0: 0, 1: 0, 2: 3, 3: 2, 4: 0, 5: 3}

// rawEnvelope holds each key's value as the decoder saw it, so that
// presence and CBOR types can be checked while the library does all the
// parsing.
type rawEnvelope struct {
	Version cbor.RawMessage `cbor:"0,keyasint"`
	ID      cbor.RawMessage `cbor:"1,keyasint"`
	Method  cbor.RawMessage `cbor:"2,keyasint"`
	Body    cbor.RawMessage `cbor:"3,keyasint"`
	Code    cbor.RawMessage `cbor:"4,keyasint"`
	Message cbor.RawMessage `cbor:"5,keyasint"`
}

// checkEnvelopeTypes decodes b's top-level map with the strict decoder into
// raw values and checks that each value has its key's major type. It
// returns the set of keys present, bit k for key k.
func checkEnvelopeTypes(b []byte) (present uint8, err error) {
	var raw rawEnvelope
	if err := decMode.Unmarshal(b, &raw); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	for key, v := range [...]cbor.RawMessage{raw.Version, raw.ID, raw.Method, raw.Body, raw.Code, raw.Message} {
		if v == nil {
			continue
		}
		// The decoder accepted v as one well-formed item without tags or
		// indefinite lengths, so its first byte holds its major type.
		if major, want := v[0]>>5, envelopeKeyTypes[key]; major != want {
			return 0, fmt.Errorf("%w: key %d holds %s, want %s", ErrBadEnvelope, key, cborTypeName(major), cborTypeName(want))
		}
		present |= 1 << key
	}
	return present, nil
}

func cborTypeName(major byte) string {
	switch major {
	case 0:
		return "an unsigned integer"
	case 1:
		return "a negative integer"
	case 2:
		return "a byte string"
	case 3:
		return "a text string"
	case 4:
		return "an array"
	case 5:
		return "a map"
	case 6:
		return "a tag"
	}
	return "a float or simple value (false, true, null, undefined, …)"
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
