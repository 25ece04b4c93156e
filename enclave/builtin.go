package enclave

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/protocol"
)

// Version is reported by enclavekit.health. When empty, the main module's
// version from the binary's build information is used ("(devel)" for a
// local build). Set it at link time with
// -ldflags='-X github.com/enclavekit/enclavekit/enclave.Version=v1.2.3'.
var Version string

// BuildVersion is the version enclavekit.health reports: Version, or the
// main module's version from the build information.
func BuildVersion() string { return version() }

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// MaxAttestField is the largest nonce or user_data accepted by
// enclavekit.attest, in bytes (the NSM's limit). A public_key is refused:
// only the enclave's own keys go into that field.
const MaxAttestField = 1024

// Health returns what enclavekit.health reports, the clock included (the
// method sends it only to clients that ask for it).
func (s *Server) Health() protocol.HealthResponse {
	st := s.Stats()
	last, _ := s.nsm.clock.Last()
	clock := &protocol.ClockHealth{
		SkewNanos:        int64(last.Skew),
		UncertaintyNanos: int64(last.Uncertainty),
		MaxSkewNanos:     int64(s.cfg.MaxClockSkew),
		IntervalMillis:   uint64(s.cfg.ClockCheckInterval.Milliseconds()),
		Checks:           st.ClockChecks,
		Exceeded:         st.ClockSkewExceeded,
		NSMFailures:      st.NSMFailures,
	}
	if !last.NSMTime.IsZero() {
		clock.NSMTimeUnixMilli = last.NSMTime.UnixMilli()
		clock.AgeMillis = uint64(max(time.Since(last.At).Milliseconds(), 0))
	}
	return protocol.HealthResponse{
		Version:       version(),
		Dev:           s.cfg.Dev,
		UptimeMillis:  uint64(time.Since(s.started).Milliseconds()),
		Checks:        s.Checks(),
		OpenConns:     st.OpenConns,
		RejectedConns: st.RejectedConns,
		TotalConns:    st.TotalConns,
		Clock:         clock,
	}
}

func (s *Server) handleHealth(_ context.Context, body []byte) ([]byte, error) {
	want, err := parseHealthRequest(body)
	if err != nil {
		return nil, err
	}
	h := s.Health()
	if !want.Clock {
		h.Clock = nil // keys 1..7 only: what clients before key 8 decode
	}
	return protocol.Marshal(&h)
}

// parseHealthRequest decodes an enclavekit.health body. Unknown keys are
// ignored, so that a newer client asking for more gets what this server
// has; key 1 must be a bool.
func parseHealthRequest(body []byte) (protocol.HealthRequest, error) {
	var req protocol.HealthRequest
	if len(body) == 0 {
		return req, nil
	}
	var m map[uint64]any
	if err := protocol.Unmarshal(body, &m); err != nil {
		return req, fmt.Errorf("%w: enclavekit.health body: %w", protocol.ErrBadRequest, err)
	}
	if v, ok := m[1]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return req, fmt.Errorf("%w: enclavekit.health body: key 1 (clock) is %T, want a bool", protocol.ErrBadRequest, v)
		}
		req.Clock = b
	}
	return req, nil
}

func (s *Server) handleAttest(ctx context.Context, body []byte) ([]byte, error) {
	var req protocol.AttestRequest
	// An empty body is an empty request: no nonce, user data or key.
	if len(body) > 0 {
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: enclavekit.attest body: %w", protocol.ErrBadRequest, err)
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"nonce", req.Nonce}, {"user_data", req.UserData}, {"public_key", req.PublicKey}} {
		if len(f.b) > MaxAttestField {
			return nil, fmt.Errorf("%w: enclavekit.attest %s is %d bytes, the limit is %d", protocol.ErrTooLarge, f.name, len(f.b), MaxAttestField)
		}
	}
	// A document's public_key is, to KMS and every verifier, a key only
	// this measured enclave holds: KMS encrypts a Recipient answer to it.
	// Signed over a key the caller chose, a genuine document would let the
	// parent receive what KMS releases only to this image.
	if req.PublicKey != nil {
		return nil, fmt.Errorf("%w: enclavekit.attest: a caller may not choose the document's public_key (KMS would encrypt to it)", protocol.ErrBadRequest)
	}
	if s.cfg.Attester == nil {
		return nil, fmt.Errorf("%w: enclavekit.attest: no Attester configured (Config.Attester is nil)", protocol.ErrUnavailable)
	}
	doc, err := s.cfg.Attester.Attest(ctx, attest.Request{Nonce: req.Nonce, UserData: req.UserData})
	if err != nil {
		return nil, fmt.Errorf("enclavekit.attest: attester: %w", err)
	}
	return protocol.Marshal(&protocol.AttestResponse{Document: doc})
}
