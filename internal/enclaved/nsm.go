package enclaved

import (
	"context"
	"fmt"
	"io"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

// NSM choices of the --nsm flag.
const (
	nsmDevice   = "device"
	nsmEmulated = "emulated"
)

// newAttester builds the attester behind enclavekit.attest: "device" opens
// /dev/nsm (inside a Nitro Enclave), "emulated" starts the in-memory NSM
// emulator of attest/nsmtest, whose documents chain to a root generated at
// start and trusted by nothing else, with nsmtest.DevPCRs as PCR0..2 (or
// emu, when the caller supplies one).
// It is the only place that chooses. The result may implement io.Closer.
func newAttester(kind string, emu *nsmtest.Emulator) (attest.Attester, error) {
	switch kind {
	case nsmDevice:
		n, err := attest.OpenDefaultNSM()
		if err != nil {
			return nil, fmt.Errorf("--nsm device: opening /dev/nsm: %w (run inside a Nitro Enclave, or use --nsm emulated with --dev)", err)
		}
		return n, nil
	case nsmEmulated:
		if emu == nil {
			// Non-zero stand-ins for the image's measurements (the same
			// as make dev's): all-zero PCRs would be a debug-mode enclave.
			var err error
			emu, err = nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
			if err != nil {
				return nil, fmt.Errorf("--nsm emulated: starting the NSM emulator: %w", err)
			}
		}
		n, err := attest.OpenNSM(emu.Options())
		if err != nil {
			return nil, fmt.Errorf("--nsm emulated: opening a session with the NSM emulator: %w", err)
		}
		return n, nil
	}
	return nil, fmt.Errorf("--nsm %q: want %q (the enclave's /dev/nsm) or %q (the attest/nsmtest emulator, needs --dev)", kind, nsmDevice, nsmEmulated)
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
