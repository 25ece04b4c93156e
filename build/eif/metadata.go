package eif

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Metadata is the JSON of the metadata section (EifIdentityInfo in
// aws-nitro-enclaves-image-format src/defs/mod.rs). Field order is fixed by
// the struct, so the encoding is deterministic.
type Metadata struct {
	ImageName      string          `json:"ImageName"`
	ImageVersion   string          `json:"ImageVersion"`
	BuildMetadata  BuildInfo       `json:"BuildMetadata"`
	DockerInfo     json.RawMessage `json:"DockerInfo"`     // docker inspect output, or null
	CustomMetadata json.RawMessage `json:"CustomMetadata"` // user JSON, or null
}

// BuildInfo is EifBuildInfo. For a reproducible image BuildTime must come
// from SOURCE_DATE_EPOCH rather than the clock.
type BuildInfo struct {
	BuildTime        string `json:"BuildTime"`
	BuildTool        string `json:"BuildTool"`
	BuildToolVersion string `json:"BuildToolVersion"`
	OperatingSystem  string `json:"OperatingSystem"`
	KernelVersion    string `json:"KernelVersion"`
}

// Marshal encodes m compactly.
func (m *Metadata) Marshal() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("eif: encoding metadata: %w", err)
	}
	return b, nil
}

// ParseMetadata decodes a metadata section strictly: one JSON object, no
// unknown top-level or BuildMetadata fields, nothing after it.
func ParseMetadata(b []byte) (*Metadata, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Metadata
	if err := dec.Decode(&m); err != nil {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		return nil, formatErr(ErrMalformed, off, "metadata", "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, formatErr(ErrTrailing, dec.InputOffset(), "metadata", "data after the JSON object")
	}
	return &m, nil
}
