package kmstest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error types (the "__type" of KMS's JSON error shape) the emulator returns.
// KMS answers all of them with HTTP 400 except the internal error (500).
const (
	errAccessDenied       = "AccessDeniedException"
	errIncorrectKey       = "IncorrectKeyException"
	errExpiredToken       = "ExpiredTokenException"
	errInternal           = "KMSInternalException"
	errInvalidCiphertext  = "InvalidCiphertextException"
	errInvalidKeyUsage    = "InvalidKeyUsageException"
	errInvalidSignature   = "InvalidSignatureException"
	errMalformedPolicy    = "MalformedPolicyDocumentException"
	errMissingAuth        = "MissingAuthenticationTokenException"
	errNotFound           = "NotFoundException"
	errSerialization      = "SerializationException"
	errUnknownOperation   = "UnknownOperationException"
	errUnrecognizedClient = "UnrecognizedClientException"
	errUnsupported        = "UnsupportedOperationException"
	errValidation         = "ValidationException"
)

// apiError is a KMS error: {"__type": Type, "message": Message}.
type apiError struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

func errf(typ, format string, args ...any) *apiError {
	return &apiError{Type: typ, Message: fmt.Sprintf(format, args...)}
}

func (e *apiError) Error() string { return e.Type + ": " + e.Message }

func (e *apiError) status() int {
	if e.Type == errInternal {
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

func (e *apiError) body() []byte {
	b, _ := json.Marshal(e)
	return b
}
