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
	// Clock is the enclave's clock as measured against the NSM. It is sent
	// only when the request asks for it (HealthRequest.Clock): clients that
	// predate it decode health strictly and would refuse an unknown key.
	Clock *ClockHealth `cbor:"8,keyasint,omitempty" json:"clock,omitempty"`
}

// HealthRequest is the optional body of an enclavekit.health request. An
// empty body asks for keys 1..7 of the response only, which every client
// can decode. Servers ignore keys of the request they do not know, and
// servers that predate it ignore the body.
type HealthRequest struct {
	// Clock asks for key 8 of the response (HealthResponse.Clock).
	Clock bool `cbor:"1,keyasint,omitempty"`
}

// ClockHealth is the enclave's clock against the NSM: the system clock is
// compared with the timestamp of a fresh attestation document at start and
// at every re-check.
type ClockHealth struct {
	// SkewNanos is the system clock minus the NSM's time at the last
	// reading, in nanoseconds: positive when the system clock is ahead.
	SkewNanos int64 `cbor:"1,keyasint" json:"skew_ns"`
	// UncertaintyNanos bounds the error of SkewNanos (half the NSM's
	// answer time plus the timestamp's 1 ms resolution).
	UncertaintyNanos int64 `cbor:"2,keyasint" json:"uncertainty_ns"`
	// MaxSkewNanos is the configured bound on the skew.
	MaxSkewNanos int64 `cbor:"3,keyasint" json:"max_skew_ns"`
	// NSMTimeUnixMilli is the last reading's document timestamp; 0 before
	// the first reading.
	NSMTimeUnixMilli int64 `cbor:"4,keyasint" json:"nsm_time_unix_ms"`
	// AgeMillis is the time since the last reading.
	AgeMillis uint64 `cbor:"5,keyasint" json:"age_ms"`
	// IntervalMillis is the configured time between re-checks.
	IntervalMillis uint64 `cbor:"6,keyasint" json:"interval_ms"`
	// Checks counts readings, the one at start included.
	Checks uint64 `cbor:"7,keyasint" json:"checks"`
	// Exceeded counts readings whose skew was past the bound.
	Exceeded uint64 `cbor:"8,keyasint" json:"exceeded"`
	// NSMFailures counts NSM requests that failed or timed out.
	NSMFailures uint64 `cbor:"9,keyasint" json:"nsm_failures"`
}

// CheckResult is one startup check: which file was read (or, for the NSM
// checks, what was examined), what it held, what is required, and whether
// it passed (or was overridden in dev mode).
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
