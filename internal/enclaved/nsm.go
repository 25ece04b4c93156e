package enclaved

import (
	"context"
	"fmt"
	"io"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/hf/nsm"
)

// NSM choices of the --nsm flag.
const (
	nsmDevice   = "device"
	nsmEmulated = "emulated"
)

// ProductionTag is the build tag of the enclaved that goes into the
// enclave image (make enclaved, build/Dockerfile, make repro-check). Built
// with it, enclaved links no emulator: --nsm emulated and --emulator-root
// are refused, and only /dev/nsm can answer enclavekit.attest. Without it
// (go run ./cmd/enclaved, make dev, the tests) the NSM emulator of
// attest/nsmtest is built in for development.
const ProductionTag = "enclavekit_production"

// errNoEmulator is the one-line refusal of the production build.
const errNoEmulator = "this enclaved was built for an enclave image without the emulator (build tag " + ProductionTag + "); use --nsm device inside a Nitro Enclave, or run a development build (go run ./cmd/enclaved --dev --nsm emulated)"

// NSMEmulator is what enclaved needs of an emulated NSM (attest/nsmtest's
// Emulator has it): the hf/nsm session options that route requests to it,
// and its root certificate for --emulator-root. enclaved declares it here
// so that the production build names no emulator package.
type NSMEmulator interface {
	Options() nsm.Options
	RootPEM() []byte
}

// newAttester builds the attester behind enclavekit.attest: "device" opens
// /dev/nsm (inside a Nitro Enclave), "emulated" opens a session with emu,
// the NSM emulator of emulatorFor (development builds only).
// It is the only place that chooses. The result may implement io.Closer.
func newAttester(kind string, emu NSMEmulator) (attest.Attester, error) {
	switch kind {
	case nsmDevice:
		n, err := attest.OpenDefaultNSM()
		if err != nil {
			return nil, fmt.Errorf("--nsm device: opening /dev/nsm: %w (run inside a Nitro Enclave, or use --nsm emulated with --dev)", err)
		}
		return n, nil
	case nsmEmulated:
		if emu == nil {
			var err error
			if emu, err = newEmulator(); err != nil {
				return nil, err
			}
		}
		n, err := attest.OpenNSM(emu.Options())
		if err != nil {
			return nil, fmt.Errorf("--nsm emulated: opening a session with the NSM emulator: %w", err)
		}
		return n, nil
	}
	return nil, fmt.Errorf("--nsm %q: want %q (the enclave's /dev/nsm) or %q (the NSM emulator of development builds, needs --dev)", kind, nsmDevice, nsmEmulated)
}

// printEmulatedPCRs prints PCR0..2 of an emulated NSM, so that a developer
// can pass them to a verifier (enclavekit attest verify --pcr).
func printEmulatedPCRs(ctx context.Context, w io.Writer, a attest.Attester) {
	n, ok := a.(*attest.NSM)
	if !ok {
		return
	}
	for i := range 3 {
		p, err := n.DescribePCR(ctx, i)
		if err != nil {
			fmt.Fprintf(w, "enclaved: emulated NSM: PCR%d: %v\n", i, err)
			continue
		}
		fmt.Fprintf(w, "enclaved: emulated NSM: PCR%d %x\n", i, p.Value)
	}
}
