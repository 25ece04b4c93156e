package deptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

const module = "github.com/enclavekit/enclavekit"

// productionTag is internal/enclaved's ProductionTag (not imported: this
// package imports nothing of the module, so that it can judge all of it).
const productionTag = "enclavekit_production"

// pkg is one package of the module as go list reports it, with the
// module's prefix removed from every path.
type pkg struct {
	Path    string   // e.g. "enclave/kms"
	Imports []string // direct imports of the non-test files, in the module
	Deps    []string // transitive imports of the non-test files, in the module
}

// emulators are the test emulators no production package may import.
var emulators = []string{"attest/nsmtest", "enclave/kms/kmstest", "parent/imdstest"}

// servers are the parent-side servers that stand apart from the client
// library: of parent/... they import only parent/internal/....
var servers = []string{"parent/ingress", "parent/logsink"}

// notProduction reports whether p is exempt from the production rules:
// the development and test tooling under internal/, the examples, and the
// emulators themselves.
func notProduction(p string) bool {
	switch {
	case p == "internal/devharness", p == "internal/soak", p == "internal/vsocktest", p == "internal/deptest", p == "internal/atlstest":
		return true
	case under(p, "examples"):
		return true
	}
	return slices.Contains(emulators, p)
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// isInternal reports whether p is under the module's own internal/ (a
// nested internal, such as enclave/kms/internal/cms, belongs to its
// parent package and is not meant here).
func isInternal(p string) bool { return under(p, "internal") }

// check returns one line for each broken rule in the graph pkgs. tagged
// says the graph was listed with the production tag, in which no
// exception for the emulator holds.
func check(pkgs []pkg, tagged bool) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for _, p := range pkgs {
		for _, d := range p.Deps {
			switch {
			case under(p.Path, "enclave") && under(d, "parent"):
				bad("%s imports %s: enclave and parent meet only in protocol and transport", p.Path, d)
			case under(p.Path, "parent") && under(d, "enclave"):
				bad("%s imports %s: parent and enclave meet only in protocol and transport", p.Path, d)
			case under(p.Path, "protocol") && under(d, "transport"):
				bad("%s imports %s: protocol sits below transport", p.Path, d)
			case slices.Contains(servers, p.Path) && under(d, "parent") && !under(d, "parent/internal"):
				bad("%s imports %s: the ingress and the log sink import nothing of parent/ but parent/internal/", p.Path, d)
			}
		}
		if notProduction(p.Path) {
			continue
		}
		if p.Path == "cmd/enclavekit" {
			// The CLI runs the harness and the soak, which link the
			// emulators; its own direct imports are held to those two.
			for _, d := range p.Imports {
				if (isInternal(d) && d != "internal/devharness" && d != "internal/soak") || slices.Contains(emulators, d) {
					bad("%s imports %s: of internal/ and the emulators it may import only internal/devharness and internal/soak", p.Path, d)
				}
			}
			continue
		}
		for _, d := range p.Deps {
			switch {
			case isInternal(d):
				if p.Path == "cmd/enclaved" && d == "internal/enclaved" {
					continue // the in-enclave program, shared with the harness
				}
				bad("%s imports %s: production code imports nothing under internal/", p.Path, d)
			case slices.Contains(emulators, d):
				if !tagged && d == "attest/nsmtest" && (p.Path == "internal/enclaved" || p.Path == "cmd/enclaved") {
					continue // --nsm emulated, in the development build only
				}
				bad("%s imports the test emulator %s%s", p.Path, d, map[bool]string{true: " (in the enclave image's build, -tags=" + productionTag + ")"}[tagged])
			}
		}
	}
	return errs
}

// list runs go list over the whole module with the given build tags.
func list(t *testing.T, tags string) []pkg {
	t.Helper()
	args := []string{"list", "-json=ImportPath,Imports,Deps"}
	if tags != "" {
		args = append(args, "-tags="+tags)
	}
	args = append(args, module+"/...")
	cmd := exec.Command(goTool(t), args...)
	cmd.Env = append(cmd.Environ(), "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var raw struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list's output: %v", err)
		}
		pkgs = append(pkgs, pkg{Path: trim(raw.ImportPath), Imports: ours(raw.Imports), Deps: ours(raw.Deps)})
	}
	return pkgs
}

func trim(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, module), "/") }

// ours keeps the module's own packages among paths, trimmed.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if under(p, module) {
			out = append(out, trim(p))
		}
	}
	return out
}

func goTool(t *testing.T) string { return testutil.GoCommand(t, "to list the packages with") }

// TestArchitecture checks the module's import graph, in the development
// build and in the enclave image's build.
func TestArchitecture(t *testing.T) {
	for _, tags := range []string{"", productionTag} {
		name := "development"
		if tags != "" {
			name = tags
		}
		t.Run(name, func(t *testing.T) {
			pkgs := list(t, tags)
			// The graph is the real one: the packages the rules name exist.
			have := map[string]bool{}
			for _, p := range pkgs {
				have[p.Path] = true
			}
			for _, p := range append([]string{"enclave", "parent", "protocol", "transport", "cmd/enclaved", "cmd/enclavekit", "internal/enclaved", "attest/nsmtest"}, servers...) {
				if !have[p] {
					t.Fatalf("go list did not report %s; the rules would check nothing", p)
				}
			}
			for _, e := range check(pkgs, tags != "") {
				t.Error(e)
			}
		})
	}
}

// TestCheckCatches: each rule fails on a graph that breaks it, and each
// exception is exactly as wide as documented.
func TestCheckCatches(t *testing.T) {
	tests := []struct {
		name   string
		pkg    pkg
		tagged bool
		want   string // "" means allowed
	}{
		{"enclave imports parent", pkg{Path: "enclave/kms", Deps: []string{"parent"}}, false, "enclave/kms imports parent"},
		{"parent imports enclave", pkg{Path: "parent/proxy", Deps: []string{"enclave/kms"}}, false, "parent/proxy imports enclave/kms"},
		{"the ingress imports enclave", pkg{Path: "parent/ingress", Deps: []string{"enclave"}}, false, "parent/ingress imports enclave"},
		{"the ingress imports the client", pkg{Path: "parent/ingress", Deps: []string{"parent"}}, false, "parent/ingress imports parent"},
		{"the log sink imports enclave", pkg{Path: "parent/logsink", Deps: []string{"enclave"}}, false, "parent/logsink imports enclave"},
		{"the log sink imports the ingress", pkg{Path: "parent/logsink", Deps: []string{"parent/ingress"}}, false, "parent/logsink imports parent/ingress"},
		{"the ingress imports the accept loop", pkg{Path: "parent/ingress", Deps: []string{"parent/internal/acceptloop", "protocol/proxyproto", "transport"}}, false, ""},
		{"protocol imports transport", pkg{Path: "protocol/proxyproto", Deps: []string{"transport"}}, false, "protocol/proxyproto imports transport"},
		{"production imports internal", pkg{Path: "parent", Deps: []string{"internal/soak"}}, false, "parent imports internal/soak"},
		{"production imports an emulator", pkg{Path: "enclave", Deps: []string{"enclave/kms/kmstest"}}, false, "enclave imports the test emulator enclave/kms/kmstest"},
		{"production imports an emulator indirectly", pkg{Path: "attest", Deps: []string{"parent/imdstest"}}, false, "attest imports the test emulator parent/imdstest"},
		{"cmd/enclavekit imports the harness", pkg{Path: "cmd/enclavekit", Imports: []string{"internal/devharness", "internal/soak"}, Deps: []string{"internal/devharness", "internal/soak", "internal/enclaved", "attest/nsmtest"}}, false, ""},
		{"cmd/enclavekit imports an emulator", pkg{Path: "cmd/enclavekit", Imports: []string{"attest/nsmtest"}, Deps: []string{"attest/nsmtest"}}, false, "cmd/enclavekit imports attest/nsmtest"},
		{"cmd/enclavekit imports internal/enclaved", pkg{Path: "cmd/enclavekit", Imports: []string{"internal/enclaved"}, Deps: []string{"internal/enclaved"}}, false, "cmd/enclavekit imports internal/enclaved"},
		{"cmd/enclaved imports its program", pkg{Path: "cmd/enclaved", Deps: []string{"internal/enclaved"}}, true, ""},
		{"cmd/enclaved imports another internal", pkg{Path: "cmd/enclaved", Deps: []string{"internal/soak"}}, false, "cmd/enclaved imports internal/soak"},
		{"enclaved's emulator in development", pkg{Path: "internal/enclaved", Deps: []string{"attest/nsmtest"}}, false, ""},
		{"enclaved's emulator in the image", pkg{Path: "internal/enclaved", Deps: []string{"attest/nsmtest"}}, true, "internal/enclaved imports the test emulator attest/nsmtest (in the enclave image's build"},
		{"enclaved's other emulators", pkg{Path: "internal/enclaved", Deps: []string{"enclave/kms/kmstest"}}, false, "internal/enclaved imports the test emulator enclave/kms/kmstest"},
		{"the harness may", pkg{Path: "internal/devharness", Deps: []string{"attest/nsmtest", "internal/enclaved"}}, false, ""},
		{"examples may", pkg{Path: "examples/tutorial/greeter-enclave", Deps: []string{"attest/nsmtest"}}, false, ""},
		{"emulators are not exempt from the halves", pkg{Path: "enclave/kms/kmstest", Deps: []string{"parent"}}, false, "enclave/kms/kmstest imports parent"},
		{"a nested internal is the parent's own", pkg{Path: "enclave/kms", Deps: []string{"enclave/kms/internal/cms"}}, true, ""},
		{"a prefix is not a package", pkg{Path: "enclavex", Deps: []string{"parent"}}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := check([]pkg{tt.pkg}, tt.tagged)
			if tt.want == "" {
				if len(errs) > 0 {
					t.Fatalf("refused: %q", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.HasPrefix(errs[0], tt.want) {
				t.Fatalf("got %q, want one error starting %q", errs, tt.want)
			}
		})
	}
}
