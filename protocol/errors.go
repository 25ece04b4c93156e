package protocol

import (
	"context"
	"errors"
	"fmt"
)

// Code is a protocol v1 error code, carried in envelope key 4. Zero means
// success and is never sent.
type Code uint8

// Error codes of protocol v1.
const (
	CodeOK              Code = 0
	CodeBadRequest      Code = 1
	CodeUnknownMethod   Code = 2
	CodeTooLarge        Code = 3
	CodeTimeout         Code = 4
	CodeUnavailable     Code = 5
	CodeUnauthenticated Code = 6
	CodeInternal        Code = 7

	maxCode = CodeInternal
)

// Sentinels for the error codes. A remote error (*RemoteError) matches the
// sentinel of its code with errors.Is; a handler may return (or wrap) one of
// them to choose the code its caller sees.
var (
	ErrBadRequest      = &codeError{CodeBadRequest}
	ErrUnknownMethod   = &codeError{CodeUnknownMethod}
	ErrTooLarge        = &codeError{CodeTooLarge}
	ErrTimeout         = &codeError{CodeTimeout}
	ErrUnavailable     = &codeError{CodeUnavailable}
	ErrUnauthenticated = &codeError{CodeUnauthenticated}
	ErrInternal        = &codeError{CodeInternal}
)

var codeNames = [...]string{
	CodeOK:              "ok",
	CodeBadRequest:      "bad request",
	CodeUnknownMethod:   "unknown method",
	CodeTooLarge:        "too large",
	CodeTimeout:         "timeout",
	CodeUnavailable:     "unavailable",
	CodeUnauthenticated: "unauthenticated",
	CodeInternal:        "internal error",
}

// Valid reports whether c is defined by protocol v1 (including CodeOK).
func (c Code) Valid() bool { return c <= maxCode }

// String returns the code's name, which is also its generic message.
func (c Code) String() string {
	if c.Valid() {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Message returns the fixed, generic message sent across the enclave
// boundary with c. Details never cross: they are logged inside the enclave.
func (c Code) Message() string { return c.String() }

// Sentinel returns the sentinel error for c, or nil for CodeOK and codes
// that protocol v1 does not define.
func (c Code) Sentinel() error {
	switch c {
	case CodeBadRequest:
		return ErrBadRequest
	case CodeUnknownMethod:
		return ErrUnknownMethod
	case CodeTooLarge:
		return ErrTooLarge
	case CodeTimeout:
		return ErrTimeout
	case CodeUnavailable:
		return ErrUnavailable
	case CodeUnauthenticated:
		return ErrUnauthenticated
	case CodeInternal:
		return ErrInternal
	}
	return nil
}

type codeError struct{ code Code }

func (e *codeError) Error() string { return "protocol: " + e.code.String() }

// RemoteError is an error code received from the other side of a connection,
// with the message it sent (generic by design). errors.Is matches it against
// the sentinel of its code: errors.Is(err, ErrUnknownMethod).
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" || e.Message == e.Code.Message() {
		return fmt.Sprintf("remote error %d (%s)", e.Code, e.Code)
	}
	return fmt.Sprintf("remote error %d (%s): %q", e.Code, e.Code, e.Message)
}

// Is reports whether target is the sentinel of e's code.
func (e *RemoteError) Is(target error) bool {
	s := e.Code.Sentinel()
	return s != nil && target == s
}

// CodeOf maps a local error to the code to send: a sentinel (or a wrapped
// one) or a *RemoteError gives its own code, a context deadline gives
// CodeTimeout, ErrFrameTooLarge gives CodeTooLarge, anything else
// CodeInternal. nil gives CodeOK.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	var re *RemoteError
	if errors.As(err, &re) && re.Code != CodeOK && re.Code.Valid() {
		return re.Code
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, ErrFrameTooLarge):
		return CodeTooLarge
	}
	return CodeInternal
}
