package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/internal/testutil"

	"github.com/enclavekit/enclavekit/internal/enclaved"
)

// emulatorPackages are the test emulators no enclave image may link.
var emulatorPackages = []string{"nsmtest", "kmstest", "imdstest"}

// buildEnclaved builds ./cmd/enclaved for linux (the enclave's OS) with
// the given tags, keeping the symbol table so the test can read it, and
// returns the binary's path.
func buildEnclaved(t *testing.T, tags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "enclaved")
	args := []string{"build", "-trimpath", "-buildvcs=false", "-o", out}
	if tags != "" {
		args = append(args, "-tags="+tags)
	}
	cmd := exec.Command(goTool(t), append(args, ".")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

func goTool(t *testing.T) string { return testutil.GoCommand(t, "to build enclaved with") }

// symbols returns the names in the symbol table of the ELF binary at path.
func symbols(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("reading the symbols of %s: %v", path, err)
	}
	names := make([]string, len(syms))
	for i, s := range syms {
		names[i] = s.Name
	}
	return names
}

// emulatorSymbols returns the symbols among names that belong to an
// emulator package.
func emulatorSymbols(names []string) []string {
	var found []string
	for _, n := range names {
		for _, p := range emulatorPackages {
			if strings.Contains(n, p) {
				found = append(found, n)
			}
		}
	}
	return found
}

// TestProductionBuildLinksNoEmulator builds enclaved as the enclave image
// does (build tag enclaved.ProductionTag, as make enclaved, make
// repro-check and build/Dockerfile pass) and proves from the binary's
// symbol table that no emulator package is behind PCR0. The development
// build is checked too, so that the check is known to see the emulator
// when it is there.
func TestProductionBuildLinksNoEmulator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds enclaved twice")
	}
	t.Parallel()

	prod := buildEnclaved(t, enclaved.ProductionTag)
	names := symbols(t, prod)
	if len(names) < 1000 {
		t.Fatalf("the production enclaved has %d symbols; the check needs the symbol table", len(names))
	}
	if found := emulatorSymbols(names); len(found) > 0 {
		t.Errorf("the production enclaved links %d emulator symbols, e.g. %s", len(found), found[0])
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "internal/enclaved.Run") }) {
		t.Error("no internal/enclaved.Run symbol in the production enclaved: the check reads the wrong table")
	}
	// The image's binary is stripped (-s -w), but the function table the
	// runtime keeps still names every package linked: no emulator's path
	// may appear anywhere in the file.
	bin, err := os.ReadFile(prod)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"attest/nsmtest", "enclave/kms/kmstest", "parent/imdstest"} {
		if bytes.Contains(bin, []byte("enclavekit/"+p)) {
			t.Errorf("the production enclaved contains the path %s", p)
		}
	}

	dev := buildEnclaved(t, "")
	if found := emulatorSymbols(symbols(t, dev)); len(found) == 0 {
		t.Error("the development enclaved has no nsmtest symbol: the check would not see an emulator")
	}

	// The production binary refuses --nsm emulated in one line.
	if runtime.GOOS == "linux" && goarchIsHost() {
		var stderr bytes.Buffer
		cmd := exec.Command(prod, "--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none")
		cmd.Stderr = &stderr
		err := cmd.Run()
		msg := strings.TrimSpace(stderr.String())
		if err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, "--nsm emulated: this enclaved was built for an enclave image without the emulator") {
			t.Errorf("production enclaved --dev --nsm emulated: err %v, stderr %q; want a one-line refusal", err, msg)
		}
	}
}

// TestImageBuildsPassTheProductionTag: every recipe that builds the
// enclave image's enclaved passes the tag.
func TestImageBuildsPassTheProductionTag(t *testing.T) {
	for _, f := range []string{"../../build/build.mk", "../../build/Dockerfile"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(enclaved.ProductionTag)) {
			t.Errorf("%s does not pass -tags=%s", f, enclaved.ProductionTag)
		}
	}
}

// goarchIsHost reports whether a binary built for GOOS=linux without a
// GOARCH runs here: the test's own build is for the host's architecture.
func goarchIsHost() bool { return os.Getenv("GOARCH") == "" || os.Getenv("GOARCH") == runtime.GOARCH }
