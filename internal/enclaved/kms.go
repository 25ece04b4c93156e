package enclaved

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/protocol"
)

// The reference methods enclaved serves when KMS keys are pinned: they
// show sealing end to end and never return the sealed state itself.
const (
	// MethodSeal seals a SealRequest's data under the first pinned key (or
	// the one named) and returns the sealed blob (a CBOR byte string), for
	// the parent to store.
	MethodSeal = "example.seal"
	// MethodOpenDigest opens an OpenRequest's sealed blob and returns the
	// SHA-256 of the state (a CBOR byte string), so a caller can check the
	// round trip without the state leaving the enclave.
	MethodOpenDigest = "example.open-digest"
)

// ExampleAppPrefix starts the application name under which the example
// methods seal and open. The parent names the application, so without it
// example.open-digest would open state that other code sealed under the
// same key (and hand the parent its SHA-256), and example.seal would
// forge state that other code opens as its own.
const ExampleAppPrefix = "enclaved-example/"

// SealRequest is the body of example.seal.
type SealRequest struct {
	App  string `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint"`
	Key  string `cbor:"3,keyasint,omitempty"`
}

// OpenRequest is the body of example.open-digest.
type OpenRequest struct {
	App    string `cbor:"1,keyasint"`
	Sealed []byte `cbor:"2,keyasint"`
}

// kmsOptions are enclaved's KMS flags. They are part of the image (the
// EIF's command line), never values from the parent.
type kmsOptions struct {
	keys  listFlag
	proxy string
	roots string
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func (k *kmsOptions) flags(fl *flag.FlagSet) {
	fl.Var(&k.keys, "kms-key", "pin a KMS key `ARN` (repeatable): the only keys the enclave uses; enables the credentials method and KMS")
	fl.StringVar(&k.proxy, "kms-proxy", kms.DefaultProxyAddr, "the parent's egress route to KMS, `address`")
	fl.StringVar(&k.roots, "kms-roots", "", "PEM `file` of roots for KMS's certificate (default: the roots built into the binary; set only for an emulator)")
}

func (k *kmsOptions) check() error {
	if len(k.keys) == 0 {
		if k.roots != "" {
			return errors.New("--kms-roots needs at least one --kms-key")
		}
		return nil
	}
	cfg := kms.Config{Keys: k.keys, ProxyAddr: k.proxy, Credentials: kms.NewCredentialStore(kms.CredentialStoreOptions{}), Attester: noAttester{}}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("--kms-key/--kms-proxy: %w", err)
	}
	return nil
}

type noAttester struct{}

func (noAttester) Attest(context.Context, attest.Request) ([]byte, error) {
	return nil, errors.New("no attester")
}

// handlers sets up the credential store and the KMS client once, and
// returns the methods to register on every server (the plain listener and
// the attested TLS one share the store).
func (k *kmsOptions) handlers(att attest.Attester, log *slog.Logger) (map[string]enclave.Handler, error) {
	if len(k.keys) == 0 {
		return nil, nil
	}
	var roots *x509.CertPool
	if k.roots != "" {
		b, err := os.ReadFile(k.roots)
		if err != nil {
			return nil, fmt.Errorf("--kms-roots: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--kms-roots %s: no PEM certificate in the file", k.roots)
		}
	}
	store := kms.NewCredentialStore(kms.CredentialStoreOptions{Logger: log})
	client, err := kms.New(kms.Config{Keys: k.keys, ProxyAddr: k.proxy, RootCAs: roots, Credentials: store, Attester: att, Logger: log})
	if err != nil {
		return nil, err
	}
	hs := map[string]enclave.Handler{protocol.MethodCredentials: store.Handle}
	hs[MethodSeal] = func(ctx context.Context, body []byte) ([]byte, error) {
		var req SealRequest
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %s body: %w", protocol.ErrBadRequest, MethodSeal, err)
		}
		key := req.Key
		if key == "" {
			key = k.keys[0]
		}
		sealed, err := client.Seal(ctx, key, ExampleAppPrefix+req.App, req.Data)
		if err != nil {
			return nil, kmsError(err)
		}
		return protocol.Marshal(sealed)
	}
	hs[MethodOpenDigest] = func(ctx context.Context, body []byte) ([]byte, error) {
		var req OpenRequest
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %s body: %w", protocol.ErrBadRequest, MethodOpenDigest, err)
		}
		state, err := client.Open(ctx, ExampleAppPrefix+req.App, req.Sealed)
		if err != nil {
			return nil, kmsError(err)
		}
		sum := sha256.Sum256(state.Bytes())
		protocol.Zero(state.Bytes())
		return protocol.Marshal(sum[:])
	}
	log.Info("enclaved: KMS enabled", "keys", strings.Join(k.keys, ","), "endpoint", client.Endpoint(), "via", k.proxy)
	return hs, nil
}

// kmsError maps KMS failures to the protocol's codes; the detail stays in
// the enclave's log.
func kmsError(err error) error {
	switch {
	case errors.Is(err, kms.ErrInput), errors.Is(err, kms.ErrSealed), errors.Is(err, kms.ErrKeyNotPinned):
		return fmt.Errorf("%w: %w", protocol.ErrBadRequest, err)
	case errors.Is(err, kms.ErrAccessDenied):
		return fmt.Errorf("%w: %w", protocol.ErrUnauthenticated, err)
	case errors.Is(err, kms.ErrNoCredentials), errors.Is(err, kms.ErrCredentialsExpired):
		return fmt.Errorf("%w: %w", protocol.ErrUnavailable, err)
	}
	return err
}
