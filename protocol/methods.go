package protocol

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Built-in method names served by every enclavekit enclave server.
const (
	MethodHealth = "enclavekit.health"
	MethodAttest = "enclavekit.attest"
	// MethodLog names the envelopes of the log stream from the enclave to the
	// parent's log sink. Their body is a LogRecord; the sink never responds.
	MethodLog = "enclavekit.log"
)

// AttestRequest is the body of an enclavekit.attest request. Each field is
// at most 1024 bytes (the NSM's limit); nil fields are absent from the
// document (encoded as CBOR null there).
type AttestRequest struct {
	Nonce     []byte `cbor:"1,keyasint,omitempty"`
	UserData  []byte `cbor:"2,keyasint,omitempty"`
	PublicKey []byte `cbor:"3,keyasint,omitempty"`
}

// AttestResponse is the body of an enclavekit.attest response.
type AttestResponse struct {
	// Document is the COSE_Sign1 attestation document as the NSM returned it.
	Document []byte `cbor:"1,keyasint"`
}

// HealthResponse is the body of an enclavekit.health response.
type HealthResponse struct {
	Version string `cbor:"1,keyasint" json:"version"`
	// Dev is true when the server runs with the development override: its
	// startup checks were downgraded to warnings and it must not be trusted.
	Dev bool `cbor:"2,keyasint" json:"dev"`
	// UptimeMillis is the time since the server started.
	UptimeMillis uint64 `cbor:"3,keyasint" json:"uptime_ms"`
	// Checks are the startup checks and their results.
	Checks []CheckResult `cbor:"4,keyasint" json:"checks"`
	// OpenConns is the number of open client connections.
	OpenConns uint64 `cbor:"5,keyasint" json:"open_conns"`
	// RejectedConns counts connections closed at once because of the cap.
	RejectedConns uint64 `cbor:"6,keyasint" json:"rejected_conns"`
	// TotalConns counts connections accepted since start.
	TotalConns uint64 `cbor:"7,keyasint" json:"total_conns"`
}

// CheckResult is one startup check: which file was read, what it held, what
// is required, and whether it passed (or was overridden in dev mode).
type CheckResult struct {
	Name       string `cbor:"1,keyasint" json:"name"`
	File       string `cbor:"2,keyasint" json:"file"`
	Found      string `cbor:"3,keyasint" json:"found"`
	Want       string `cbor:"4,keyasint" json:"want"`
	OK         bool   `cbor:"5,keyasint" json:"ok"`
	Overridden bool   `cbor:"6,keyasint" json:"overridden,omitempty"`
}

// LogRecord is one log record streamed from the enclave to the parent.
type LogRecord struct {
	// TimeUnixNano is the record's time.
	TimeUnixNano int64 `cbor:"1,keyasint"`
	// Level is the slog level (-4 debug, 0 info, 4 warn, 8 error).
	Level int64 `cbor:"2,keyasint"`
	// Message is the record's message.
	Message string `cbor:"3,keyasint"`
	// Attrs are the record's attributes, flattened to dotted keys and text.
	Attrs []LogAttr `cbor:"4,keyasint,omitempty"`
	// Dropped counts records dropped before this one because the parent was
	// slow or away.
	Dropped uint64 `cbor:"5,keyasint,omitempty"`
}

// LogAttr is one key/value attribute of a LogRecord.
type LogAttr struct {
	_     struct{} `cbor:",toarray"`
	Key   string
	Value string
}

// MethodCredentials is the parent's push of AWS credentials (the instance
// role's, read from IMDSv2) for the enclave's own calls to AWS, such as
// KMS. Its body is a CredentialsRequest; the response body is empty.
const MethodCredentials = "enclavekit.credentials"

// CredentialsRequest is the body of an enclavekit.credentials request.
// The secret fields are bytes so that the receiver can wrap them in a
// Secret and wipe the decoded copy.
type CredentialsRequest struct {
	AccessKeyID     string `cbor:"1,keyasint"`
	SecretAccessKey []byte `cbor:"2,keyasint"`
	SessionToken    []byte `cbor:"3,keyasint,omitempty"`
	// ExpiresUnix is when the credentials expire, in Unix seconds; zero
	// means they do not expire (long-term keys, development only).
	ExpiresUnix int64 `cbor:"4,keyasint,omitempty"`
}

// String never prints the secret fields.
func (r CredentialsRequest) String() string {
	return "credentials for " + r.AccessKeyID + " " + Redacted
}

// GoString never prints the secret fields.
func (r CredentialsRequest) GoString() string { return r.String() }

// Format prints String under every verb: without it, verbs that bypass
// String (%d, %o, %b…) print the secret fields' bytes as numbers.
func (r CredentialsRequest) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// LogValue never logs the secret fields (slog's JSON handler would
// otherwise encode them in base64).
func (r CredentialsRequest) LogValue() slog.Value { return slog.StringValue(r.String()) }

// MarshalJSON never encodes the secret fields; the wire encoding is CBOR.
func (r CredentialsRequest) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }
