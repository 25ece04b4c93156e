//go:build !enclavekit_production

package enclaved

import (
	"fmt"

	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

// emulatorBuilt reports whether this build links the NSM emulator; it
// does except with the build tag ProductionTag.
const emulatorBuilt = true

// newEmulator starts the in-memory NSM emulator of attest/nsmtest for
// --nsm emulated. Its documents chain to a root generated at start and
// trusted by nothing else; PCR0..2 are nsmtest.DevPCRs, non-zero stand-ins
// for the image's measurements (the same as make dev's), because all-zero
// PCRs would be a debug-mode enclave.
func newEmulator() (NSMEmulator, error) {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		return nil, fmt.Errorf("--nsm emulated: starting the NSM emulator: %w", err)
	}
	return emu, nil
}
