package protocol

import (
	"errors"
	"fmt"
	"log/slog"
)

// Redacted is what a Secret prints instead of its contents.
const Redacted = "[REDACTED]"

// ErrSecretEncode is returned when something tries to serialize a Secret in a
// form other than the redacted text (CBOR, gob, binary, text marshalling).
var ErrSecretEncode = errors.New("protocol: a Secret cannot be encoded; call Bytes explicitly")

// Secret holds key material or credentials. It cannot be compared with ==
// (it is not comparable, so using it as a map key or in == does not compile),
// it redacts itself in every fmt verb, JSON and slog, it refuses to be
// encoded as CBOR or text, and its bytes come out only through Bytes.
// Compare secrets with Equal, which runs in constant time.
type Secret struct {
	// get returns the bytes. Holding them in a closure rather than a field
	// keeps them out of reach of reflection: fmt cannot call Format on a
	// Secret that sits in an unexported struct field and prints it field by
	// field instead, and a slice, or a pointer to one, would come out in
	// full there (with %!s(…=&{…}) for a pointer under a wrong verb); a func
	// prints as an address under every verb and at every depth. A func field
	// also makes Secret incomparable.
	get func() []byte
}

// NewSecret returns a Secret holding a copy of b. Wipe b with Zero when the
// caller no longer needs it.
func NewSecret(b []byte) Secret {
	c := append([]byte(nil), b...)
	return Secret{get: func() []byte { return c }}
}

func (s Secret) bytes() []byte {
	if s.get == nil {
		return nil
	}
	return s.get()
}

// Bytes returns the secret bytes themselves (not a copy). Treat the result as
// sensitive: never log it, never send it to the parent in plaintext.
func (s Secret) Bytes() []byte { return s.bytes() }

// Len returns the length of the secret in bytes. The length is not secret.
func (s Secret) Len() int { return len(s.bytes()) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.bytes()) == 0 }

// Equal reports in constant time whether s and t hold the same bytes.
func (s Secret) Equal(t Secret) bool { return Equal(s.bytes(), t.bytes()) }

// EqualBytes reports in constant time whether s holds exactly b.
func (s Secret) EqualBytes(b []byte) bool { return Equal(s.bytes(), b) }

// Wipe overwrites the secret's bytes with zeros. Copies of the Secret value
// share the bytes, so they are wiped too.
func (s Secret) Wipe() { Zero(s.bytes()) }

// String returns Redacted.
func (s Secret) String() string { return Redacted }

// GoString returns Redacted, for %#v.
func (s Secret) GoString() string { return Redacted }

// Format writes Redacted for every verb and flag (%v, %+v, %#v, %s, %x, %q…).
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue makes slog print Redacted.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON encodes the secret as the JSON string "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText refuses: text encoders (YAML, TOML, XML) must not carry secrets.
// encoding/json prefers MarshalJSON, so JSON still prints Redacted.
func (s Secret) MarshalText() ([]byte, error) { return nil, ErrSecretEncode }

// MarshalCBOR refuses: a Secret must never be put on the wire by accident.
func (s Secret) MarshalCBOR() ([]byte, error) { return nil, ErrSecretEncode }

// MarshalBinary refuses (encoding/gob and friends).
func (s Secret) MarshalBinary() ([]byte, error) { return nil, ErrSecretEncode }
