package enclaved

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/transport"
)

// tlsOptions are the attested TLS flags.
type tlsOptions struct {
	listen       string // --tls-listen
	emulatorRoot string // --emulator-root
	cfg          enclave.AttestedTLSConfig
}

func (t *tlsOptions) flags(fl *flag.FlagSet) {
	fl.StringVar(&t.listen, "tls-listen", "", "also serve the same methods over attested TLS on this `address` (e.g. vsock://any:8443); clients verify with enclavekit attest tls")
	fl.StringVar(&t.emulatorRoot, "emulator-root", "", "write the NSM emulator's root certificate (PEM) to `FILE`, so a client on this machine can verify (needs --dev --nsm emulated)")
	fl.DurationVar(&t.cfg.MaxDocumentAge, "tls-max-document-age", enclave.DefaultMaxDocumentAge, "renew the attested TLS certificate's document before it is this old (renewed at half; 10s..24h)")
}

func (t *tlsOptions) validate(o *options) error {
	if t.listen != "" {
		if _, err := transport.ParseAddr(t.listen); err != nil {
			return fmt.Errorf("--tls-listen %q: %w", t.listen, err)
		}
	}
	if err := t.cfg.Validate(); err != nil {
		return fmt.Errorf("--tls-max-document-age: %w", err)
	}
	if t.emulatorRoot != "" && o.nsm != nsmEmulated {
		return errors.New("--emulator-root writes the NSM emulator's root: it needs --dev --nsm emulated")
	}
	return nil
}

// emulatorFor returns the emulator behind --nsm emulated (the caller's, or
// a new one), after writing its root to --emulator-root; nil for the
// device.
func emulatorFor(o *options, emu NSMEmulator) (NSMEmulator, error) {
	if o.nsm != nsmEmulated {
		return nil, nil
	}
	if emu == nil {
		var err error
		if emu, err = newEmulator(); err != nil {
			return nil, err
		}
	}
	if o.tls.emulatorRoot != "" {
		if err := os.WriteFile(o.tls.emulatorRoot, emu.RootPEM(), 0o644); err != nil {
			return nil, fmt.Errorf("--emulator-root: %w", err)
		}
	}
	return emu, nil
}

// serveTLS starts the attested TLS server of --tls-listen: a second
// enclave.Server with the same configuration and methods, behind an
// enclave.AttestedListener. The returned stop shuts it down and waits.
// Without --tls-listen it does nothing.
func serveTLS(ctx context.Context, o *options, att attest.Attester, log *slog.Logger, register func(*enclave.Server), stdout io.Writer, ready func(string)) (stop func(), err error) {
	if o.tls.listen == "" {
		return func() {}, nil
	}
	cfg := o.cfg
	cfg.Addr = o.tls.listen
	srv, err := enclave.New(cfg)
	if err != nil {
		return nil, err
	}
	register(srv)
	ln, err := transport.Listen(ctx, o.tls.listen)
	if err != nil {
		return nil, fmt.Errorf("--tls-listen %s: %w", o.tls.listen, err)
	}
	tcfg := o.tls.cfg
	tcfg.Logger = log
	tctx, cancel := context.WithCancel(ctx)
	aln, err := enclave.NewAttestedListener(tctx, ln, att, tcfg)
	if err != nil {
		cancel()
		ln.Close()
		return nil, fmt.Errorf("--tls-listen: %w", err)
	}
	addr := transport.AddrOf(ln.Addr())
	fmt.Fprintf(stdout, "enclaved: attested TLS on %s\n", addr)
	if ready != nil {
		ready(addr)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeListener(tctx, aln); err != nil {
			log.Error("enclaved: the attested TLS server stopped", "err", err)
		}
		aln.Close()
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
