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
	_ [0]func() // makes Secret incomparable
	b []byte
}

// NewSecret returns a Secret holding a copy of b. Wipe b with Zero when the
// caller no longer needs it.
func NewSecret(b []byte) Secret {
	return Secret{b: append([]byte(nil), b...)}
}

// Bytes returns the secret bytes themselves (not a copy). Treat the result as
// sensitive: never log it, never send it to the parent in plaintext.
func (s Secret) Bytes() []byte { return s.b }

// Len returns the length of the secret in bytes. The length is not secret.
func (s Secret) Len() int { return len(s.b) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Equal reports in constant time whether s and t hold the same bytes.
func (s Secret) Equal(t Secret) bool { return Equal(s.b, t.b) }

// EqualBytes reports in constant time whether s holds exactly b.
func (s Secret) EqualBytes(b []byte) bool { return Equal(s.b, b) }

// Wipe overwrites the secret's bytes with zeros. Copies of the Secret value
// share the bytes, so they are wiped too.
func (s Secret) Wipe() { Zero(s.b) }

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
