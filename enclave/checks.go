package enclave

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/enclavekit/enclavekit/protocol"
)

// ErrStartupCheck is wrapped by the error New returns when a startup check
// fails and Config.Dev is not set.
var ErrStartupCheck = errors.New("enclave: startup check failed")

// Check is one startup check: File must contain exactly Want (surrounding
// white space ignored).
type Check struct {
	// Name identifies the check in logs and health output.
	Name string
	// File is the absolute path read, e.g. "/sys/…/rng_current".
	File string
	// Want is the required content.
	Want string
	// Why tells an operator what a failure means.
	Why string
}

// StartupChecks returns the checks every server runs before it listens,
// a fresh slice on each call (so no caller can change what another server
// checks). They fail closed: a missing or unreadable file is a failure.
//
// The RNG check makes sure the kernel's entropy comes from the Nitro Secure
// Module's hardware RNG. The enclave takes its randomness from crypto/rand
// (getrandom(2)), which that RNG feeds; it never calls the NSM GetRandom
// operation itself. The clock check makes sure time comes from the
// hypervisor's kvm-clock, which the parent cannot skew the way it could a
// TSC-based clock it migrated or a clock the enclave set from the network.
func StartupChecks() []Check {
	return []Check{
		{
			Name: "rng",
			File: "/sys/devices/virtual/misc/hw_random/rng_current",
			Want: "nsm-hwrng",
			Why:  "the kernel RNG must be fed by the Nitro Secure Module",
		},
		{
			Name: "clocksource",
			File: "/sys/devices/system/clocksource/clocksource0/current_clocksource",
			Want: "kvm-clock",
			Why:  "the clock must be the hypervisor's kvm-clock",
		},
	}
}

// maxCheckFile bounds how much of a checked file is read.
const maxCheckFile = 4096

// CheckError lists the startup checks that failed: the file checks of New,
// or the NSM checks of Listen and Serve.
type CheckError struct {
	Failed []protocol.CheckResult
}

func (e *CheckError) Error() string {
	var b strings.Builder
	b.WriteString("enclave: refusing to start: ")
	fileChecks := false
	for i, r := range e.Failed {
		if i > 0 {
			b.WriteString("; ")
		}
		describeFailure(&b, r)
		fileChecks = fileChecks || strings.HasPrefix(r.File, "/")
	}
	if fileChecks {
		b.WriteString(" (run inside a Nitro Enclave; for development only, pass --dev / set Config.Dev to downgrade this to a warning)")
	}
	return b.String()
}

// Unwrap makes a *CheckError match ErrStartupCheck.
func (e *CheckError) Unwrap() error { return ErrStartupCheck }

// RunChecks runs checks against fsys (rooted at "/"). It returns the result
// of every check. When a check fails and dev is false it returns a
// *CheckError naming each failed file, what it held and what is required.
// When dev is true failures are logged as warnings, marked Overridden, and
// no error is returned.
func RunChecks(fsys fs.FS, checks []Check, dev bool, log *slog.Logger) ([]protocol.CheckResult, error) {
	if log == nil {
		log = slog.Default()
	}
	results := make([]protocol.CheckResult, 0, len(checks))
	var failed []protocol.CheckResult
	for _, c := range checks {
		found := readCheckFile(fsys, c.File)
		r := protocol.CheckResult{Name: c.Name, File: c.File, Found: found, Want: c.Want, OK: found == c.Want}
		if !r.OK {
			if dev {
				r.Overridden = true
				log.Warn("DEVELOPMENT MODE: startup check failed and was overridden by --dev; this server must not be trusted",
					"check", c.Name, "file", c.File, "found", found, "required", c.Want, "why", c.Why)
			} else {
				failed = append(failed, r)
			}
		}
		results = append(results, r)
	}
	if len(failed) > 0 {
		return nil, &CheckError{Failed: failed}
	}
	return results, nil
}

// readCheckFile returns the trimmed content of name, or a description of why
// it could not be read (which never equals a wanted value).
func readCheckFile(fsys fs.FS, name string) string {
	f, err := fsys.Open(strings.TrimPrefix(name, "/"))
	if err != nil {
		return fmt.Sprintf("<unreadable: %v>", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCheckFile))
	if err != nil {
		return fmt.Sprintf("<unreadable: %v>", err)
	}
	return strings.TrimSpace(string(b))
}
