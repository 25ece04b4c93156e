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

// Health returns what enclavekit.health reports.
func (s *Server) Health() protocol.HealthResponse {
	st := s.Stats()
	return protocol.HealthResponse{
		Version:       version(),
		Dev:           s.cfg.Dev,
		UptimeMillis:  uint64(time.Since(s.started).Milliseconds()),
		Checks:        s.Checks(),
		OpenConns:     st.OpenConns,
		RejectedConns: st.RejectedConns,
		TotalConns:    st.TotalConns,
	}
}

func (s *Server) handleHealth(_ context.Context, _ []byte) ([]byte, error) {
	h := s.Health()
	return protocol.Marshal(&h)
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
