//go:build enclavekit_production

package enclaved

import "errors"

// emulatorBuilt reports whether this build links the NSM emulator; with
// the build tag ProductionTag it does not.
const emulatorBuilt = false

// newEmulator refuses: the enclave image's enclaved has no emulator.
// parseFlags refuses --nsm emulated first; this is the second lock.
func newEmulator() (NSMEmulator, error) {
	return nil, errors.New("--nsm emulated: " + errNoEmulator)
}
