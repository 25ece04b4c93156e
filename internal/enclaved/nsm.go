package enclaved

import (
	"fmt"

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
// start and trusted by nothing else (or emu, when the caller supplies one).
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
			var err error
			emu, err = nsmtest.New(nsmtest.Options{})
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
