package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docCoverage says which test runs each command of README.md and docs/:
// for each page, command prefixes in order (the first that matches wins)
// and the test that runs commands starting with it. ".ci/run" is CI itself.
// A command in a ```sh ec2 block needs a Nitro instance and is not listed
// here; TestDocCommandsCovered checks its enclavekit flags instead.
var docCoverage = map[string][]struct{ prefix, by string }{
	"README.md": {
		{"make dev", "TestMakeTargets"},
		{"make test", ".ci/run"},
	},
	"docs/tutorial.md": {
		{"git clone", ".ci/run"}, // CI runs on a fresh clone
		{"make dev", "TestMakeTargets"},
		{"go run ./cmd/enclavekit dev --keep", "TestKeepStopsOnCancel"},
		{"go run ./cmd/enclavekit dev --kill", "TestDevCommand"},
		{"go run ./cmd/enclavekit logs", "TestTutorialPartA"},
		{"go run ./cmd/enclaved", "TestTutorialPartA"},
		{"go run ./cmd/enclavekit health", "TestTutorialPartA"},
		{"go run ./cmd/enclavekit call", "TestTutorialPartA"},
		{"mkdir greeter", "TestTutorialPartB"},
		{"mkdir greeter-enclave", "TestTutorialPartB"},
		{"go mod", "TestTutorialPartB"},
		{"go run ./greeter-", "TestTutorialA4"},
		{"NONCE=", "TestTutorialPartA"},
		{"enclavekit call --addr tcp://127.0.0.1:5000 enclavekit.attest", "TestTutorialPartA"},
		{"enclavekit attest verify", "TestTutorialPartA"},
		{"make enclaved", "TestMakeTargets"},
		{"make repro-check", "TestMakeTargets"},
		{"make eif-nodocker", "TestDeployDocCommands"},
		{"make eif", "TestMakeTargets"},
		{"export SOURCE_DATE_EPOCH=", "TestTutorialPartB"},
		{"CGO_ENABLED=0", "TestTutorialPartB"},
		{"sha256sum", "TestTutorialPartB"},
		{"BLOBS=", "TestTutorialPartB"},
		{"enclavekit eif", "TestTutorialPartB"},
	},
	"docs/attested-tls.md": {
		{"go run ./cmd/enclaved", "TestAttestedTLSDocCommands"},
		{"go run ./cmd/enclavekit", "TestAttestedTLSDocCommands"},
	},
	"docs/kms.md": {
		{"enclavekit", "TestKMSDocCommands"},
		{"enclaved", "TestKMSDocCommands"},
	},
	"docs/deploy.md": {
		{"make enclaved", "TestMakeTargets"},
		{"make repro-check", "TestMakeTargets"},
		{"make pin-base-image", "TestMakeTargets"},
		{"make eif-nodocker", "TestDeployDocCommands"},
		{"make eif", "TestMakeTargets"},
		{"make install", "TestMakeTargets"},
		{"CGO_ENABLED=0", "TestDeployDocCommands"},
		{"BLOBS=", "TestDeployDocCommands"},
		{"export SOURCE_DATE_EPOCH=", "TestDeployDocCommands"},
		{"openssl", "TestDeployDocCommands"},
		{"enclavekit", "TestDeployDocCommands"},
	},
	"docs/soak.md": {
		{"make soak", "TestMakeTargets"},
		{"go run ./cmd/enclavekit soak", "TestSoakDocCommands"},
	},
}

// TestDocCommandsCovered: every command in a ```sh block of README.md and
// docs/*.md is run by a named test that exists (or by CI), or sits in a
// ```sh ec2 block; every enclavekit command shown in an ec2 block or as a
// synopsis (```text) uses only flags that command defines.
func TestDocCommandsCovered(t *testing.T) {
	pages, _ := filepath.Glob("../../docs/*.md")
	pages = append(pages, "../../README.md")
	tests := testFuncs(t)
	used := map[string]bool{}
	for _, p := range pages {
		name := strings.TrimPrefix(p, "../../")
		rules := docCoverage[name]
		for _, c := range docCommands(t, p) {
			if c.ec2 {
				checkFlags(t, name, c.line)
				continue
			}
			matched := false
			for _, r := range rules {
				if !commandHasPrefix(c.line, r.prefix) {
					continue
				}
				matched, used[name+"\x00"+r.prefix] = true, true
				if r.by == ".ci/run" {
					if b, err := os.ReadFile("../../.ci/run"); err != nil || !bytes.Contains(b, []byte("\nmake test\n")) {
						t.Errorf(".ci/run does not run make test")
					}
				} else if !tests[r.by] {
					t.Errorf("%s: %q is said to be run by %s, which does not exist", name, c.line, r.by)
				}
				break
			}
			if !matched {
				t.Errorf("%s: no test runs %q: run it in a test and add it to docCoverage, or put it in a ```sh ec2 block if it needs a Nitro instance", name, c.line)
			}
		}
		for _, s := range synopses(t, p) {
			checkFlags(t, name, s)
		}
	}
	for page, rules := range docCoverage {
		for _, r := range rules {
			if !used[page+"\x00"+r.prefix] {
				t.Errorf("docCoverage: %s has no command starting with %q any more", page, r.prefix)
			}
		}
	}
}

// commandHasPrefix reports whether line starts with prefix as whole words
// ("make eif" is not a prefix of "make eif-nodocker"; "BLOBS=" and
// "go run ./greeter-" are prefixes of what continues them).
func commandHasPrefix(line, prefix string) bool {
	if !strings.HasPrefix(line, prefix) {
		return false
	}
	if len(line) == len(prefix) || strings.ContainsAny(prefix[len(prefix)-1:], " =-") {
		return true
	}
	return line[len(prefix)] == ' '
}

// testFuncs returns the names of the Test functions of the repository.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	out := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range re.FindAllSubmatch(b, -1) {
				out[string(m[1])] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// synopses returns the enclavekit lines of the page's ```text blocks
// (usage synopses).
func synopses(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, c := range docLines(t, path, "```text") {
		if strings.HasPrefix(c.line, "enclavekit ") {
			out = append(out, c.line)
		}
	}
	return out
}

var flagName = regexp.MustCompile(`(?:^|[\s\[])(--?[a-z][a-z0-9-]*)`)

// checkFlags runs "enclavekit CMD -h" for an enclavekit command line and
// checks that every flag the line uses is in CMD's usage.
func checkFlags(t *testing.T, page, line string) {
	t.Helper()
	line = strings.TrimPrefix(line, "go run ./cmd/")
	if !strings.HasPrefix(line, "enclavekit ") {
		return // nitro-cli, sudo, kubectl, make eif, ...: documented for EC2
	}
	var path []string
	for _, w := range strings.Fields(line)[1:] {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[") || !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(w) {
			break
		}
		path = append(path, w)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append(path, "-h"), &stdout, &stderr); code != exitOK {
		t.Errorf("%s: %q: enclavekit %s -h exits %d: %s", page, line, strings.Join(path, " "), code, stderr.String())
		return
	}
	usage := stdout.String() + stderr.String()
	// Only the command's own words: not a pipe's next command, not what
	// $(...) or quotes hold.
	line, _, _ = strings.Cut(line, " | ")
	line = regexp.MustCompile(`\$\([^)]*\)+|'[^']*'|"(?:[^"\\]|\\.)*"`).ReplaceAllString(line, "")
	for _, m := range flagName.FindAllStringSubmatch(line, -1) {
		f := strings.TrimLeft(m[1], "-")
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `\b`).MatchString(usage) {
			t.Errorf("%s: %q uses --%s, which enclavekit %s does not define", page, line, f, strings.Join(path, " "))
		}
	}
}

// TestSoakDocCommands runs docs/soak.md's soak command lines as written,
// with the 30s run shortened to 3s.
func TestSoakDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a soak")
	}
	for _, c := range docCommands(t, "../../docs/soak.md") {
		if !strings.HasPrefix(c.line, "go run ./cmd/enclavekit soak") {
			continue
		}
		cmd := exec.Command("bash", "-c", strings.Replace(c.line, "--duration 30s", "--duration 3s", 1))
		cmd.Dir = "../.."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", c.line, err, out)
			continue
		}
		if !bytes.Contains(out, []byte("\nPASS\n")) && !bytes.Contains(out, []byte("-duration")) {
			t.Errorf("%s: neither a passing soak nor its flags:\n%s", c.line, out)
		}
	}
}
