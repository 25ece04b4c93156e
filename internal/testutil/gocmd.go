package testutil

import (
	"os/exec"
	"testing"
)

// GoCommand returns the go command for a test to run: the one on PATH,
// where go test puts its own toolchain's bin directory first (so it is the
// toolchain running the test). It skips the test when there is none, with
// why as the reason.
func GoCommand(t testing.TB, why string) string {
	t.Helper()
	g, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH " + why)
	}
	return g
}
