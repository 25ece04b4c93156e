package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/parent/proxy"
)

// docScript returns, as a shell script (one command a line, continuations
// joined, comments removed), the first sh block of page that holds a
// command starting with line.
func docScript(t *testing.T, page, line string) string {
	t.Helper()
	cmds := docCommands(t, page)
	for _, c := range cmds {
		if !strings.HasPrefix(c.line, line) {
			continue
		}
		var lines []string
		for _, d := range cmds {
			if d.block == c.block {
				lines = append(lines, d.line)
			}
		}
		return strings.Join(lines, "\n")
	}
	t.Fatalf("%s has no command starting with %q", page, line)
	return ""
}

// withEnclavekit builds this enclavekit into dir and returns the
// environment with dir first on PATH, so that the docs' "enclavekit ..."
// lines run it.
func withEnclavekit(t *testing.T, dir string) []string {
	t.Helper()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "enclavekit"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build enclavekit: %v\n%s", err, out)
	}
	return append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// docFence returns the body of the page's first ```lang block whose first
// line is first.
func docFence(t *testing.T, page, lang, first string) string {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```"+lang+"\n"+first+"\n")
	if !ok {
		t.Fatalf("%s has no %s block starting with %q", page, lang, first)
	}
	body, _, _ := strings.Cut(rest, "```")
	return first + "\n" + body
}

// shell runs script with bash -e -o pipefail in dir and returns its
// combined output; a failure ends the test with the output.
func shell(t *testing.T, dir string, env []string, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in %s:\n%s\nfailed: %v\n%s", dir, script, err, out)
	}
	t.Logf("ran in %s:\n%s", filepath.Base(dir), script)
	return string(out)
}

// fakeBlobs writes files in the place and shape of nitro-cli's blobs
// (/usr/share/nitro_enclaves/blobs): a kernel, its command line, init and
// nsm.ko. The EIF tools only hash and pack them.
func fakeBlobs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"bzImage": strings.Repeat("K", 4096), "cmdline": "reboot=k panic=30 pci=off nomodules console=ttyS0\n",
		"init": "init-blob", "nsm.ko": "nsm-blob",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var sha256Line = regexp.MustCompile(`(?m)^[0-9a-f]{64}  bin/greeter$`)

// TestTutorialPartB runs docs/tutorial.md's A3 module set-up and B1–B3 as
// written, through bash, in a scratch module next to a link to this
// checkout (as A3 lays it out): the reproducible build of your own
// binary, the one-command EIF build, the step-by-step build, and the PCRs.
// The only change to the text is where nitro-cli's blobs live (a fake set;
// B2 says "--blobs DIR if nitro-cli's blobs are elsewhere"). B4 onwards
// need a Nitro instance (```sh ec2 blocks); TestDocCommandsCovered checks
// their enclavekit flags, and B5's proxy configuration is loaded here.
// B1's and B2's make targets run in TestMakeTargets.
func TestTutorialPartB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs and images")
	}
	for _, tool := range []string{"bash", "git", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	const page = "../../docs/tutorial.md"
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := os.Symlink(repo, filepath.Join(tmp, "enclavekit")); err != nil {
		t.Fatal(err)
	}
	env := append(withEnclavekit(t, filepath.Join(tmp, "bin")),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	blobs := fakeBlobs(t)

	// A3: the module, then the two programs as the page quotes them
	// (TestTutorialQuotesThePrograms holds the files to the page).
	shell(t, tmp, env, docScript(t, page, "mkdir greeter"))
	greeter := filepath.Join(tmp, "greeter")
	for _, prog := range []string{"greeter-enclave", "greeter-parent"} {
		b, err := os.ReadFile(filepath.Join(repo, "examples", "tutorial", prog, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(greeter, prog, "main.go"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shell(t, greeter, env, "go mod tidy") // A4's first line
	// B1 takes SOURCE_DATE_EPOCH from the module's last commit.
	shell(t, greeter, env, "git init -q && git add -A && git commit -qm greeter")

	// B1: the reproducible build of your own server.
	out := shell(t, greeter, env, docScript(t, page, "export SOURCE_DATE_EPOCH"))
	if !sha256Line.MatchString(out) {
		t.Fatalf("B1 printed no SHA-256 of bin/greeter:\n%s", out)
	}
	// Built again from the same commit, the binary is the same.
	first := sha256Line.FindString(out)
	if again := sha256Line.FindString(shell(t, greeter, env, docScript(t, page, "export SOURCE_DATE_EPOCH"))); again != first {
		t.Errorf("B1 twice: %q then %q", first, again)
	}

	// B2, one command (--blobs: the fake set).
	oneStep := docScript(t, page, "enclavekit eif build --app bin/greeter")
	oneStep = strings.Replace(oneStep, " -o greeter.eif", " --blobs "+blobs+" -o greeter.eif", 1)
	out = shell(t, greeter, env, oneStep)
	var built struct{ Measurements map[string]string }
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &built); err != nil || len(built.Measurements["PCR0"]) != 96 {
		t.Fatalf("B2 --app printed no PCRs (%v):\n%s", err, out)
	}

	// B3 on that image: eif pcrs prints the PCRs the build printed.
	out = shell(t, greeter, env, docScript(t, page, "enclavekit eif pcrs greeter.eif"))
	for _, pcr := range []string{"PCR0", "PCR1", "PCR2"} {
		if !strings.Contains(out, pcr+" "+built.Measurements[pcr]) {
			t.Errorf("B3 eif pcrs lacks %s %s:\n%s", pcr, built.Measurements[pcr], out)
		}
	}
	if !strings.Contains(out, `"CheckCRC": true`) {
		t.Errorf("B3 eif describe: no CRC check:\n%s", out)
	}

	// B2, step by step, with BLOBS pointing at the fake set.
	byHand := docScript(t, page, "BLOBS=/usr/share/nitro_enclaves/blobs")
	out = shell(t, greeter, env, strings.Replace(byHand, "BLOBS=/usr/share/nitro_enclaves/blobs", "BLOBS="+blobs, 1))
	if !strings.Contains(out, `"PCR0"`) {
		t.Fatalf("B2 step by step printed no PCRs:\n%s", out)
	}
	out = shell(t, greeter, env, docScript(t, page, "enclavekit eif pcrs greeter.eif"))
	if !strings.Contains(out, "PCR2 ") || strings.Contains(out, built.Measurements["PCR2"]) {
		t.Errorf("B2 by hand (with the CA bundle and two --env) should change PCR2:\n%s", out)
	}

	// B5: the proxy configuration the page shows loads (the proxy itself
	// listens on vsock, so it runs only on EC2).
	yml := docFence(t, page, "yaml", "# /etc/enclavekit/proxy.yaml")
	if _, err := proxy.ParseConfig("proxy.yaml", []byte(yml)); err != nil {
		t.Errorf("B5's proxy.yaml: %v", err)
	}
}

// makeIn runs make in the checkout's root with args, outside any make
// that runs this test (its jobserver and variables are not passed on).
func makeIn(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "make", append([]string{"-C", "../.."}, args...)...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "MAKEFLAGS=") && !strings.HasPrefix(e, "MFLAGS=") && !strings.HasPrefix(e, "MAKELEVEL=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("make %s", strings.Join(args, " "))
	return out.String(), err
}

var (
	sha256Of  = regexp.MustCompile(`(?m)^[0-9a-f]{64}  \S*enclaved$`)
	benchLine = regexp.MustCompile(`(?m)^Benchmark\S+\s+\d+\s+[\d.]+ ns/op`)
)

// TestMakeTargets runs the make targets that README.md, docs/tutorial.md,
// docs/deploy.md and docs/soak.md show, as a user runs them, with these
// variables set on the command line and nothing else changed: outputs go
// to a scratch directory (BIN_DIR, EIF_OUT, PREFIX), nitro-cli's blobs
// are a fake set (BLOBS), and the long runs are short: make fuzz and make
// bench over one package (PKGS) for 1s / one iteration, without fuzz's
// exhaustive mutation tests (FUZZ_EXHAUSTIVE=0: minutes), and make soak
// for 3s. make eif-nodocker runs in TestDeployDocCommands. make eif and make pin-base-image need a Docker engine and
// nitro-cli: where either is missing, each must refuse and name what to
// install. make test is what CI runs (.ci/run).
func TestMakeTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs make targets that build binaries and images")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is needed (README: a fresh machine has Go, gcc, make and git)")
	}
	out := t.TempDir()
	eifTools := exec.Command("docker", "info").Run() == nil
	if _, err := exec.LookPath("nitro-cli"); err != nil {
		eifTools = false
	}
	tests := []struct {
		args []string
		fail bool     // make must exit non-zero
		want []string // substrings of the output
		re   *regexp.Regexp
	}{
		{args: []string{"dev"}, want: []string{"all 8 steps passed"}},
		{args: []string{"enclaved", "BIN_DIR=" + out}, re: sha256Of},
		{args: []string{"repro-check"}, want: []string{"repro-check: OK"}},
		{args: []string{"eif"}, fail: true, want: []string{"missing: ", "make eif: cannot build the image"}},
		{args: []string{"pin-base-image"}, fail: true, want: []string{"missing: "}},
		{args: []string{"install", "PREFIX=" + out}, want: []string{"installed " + out + "/bin/enclavekit and enclaved"}},
		{args: []string{"fuzz", "FUZZTIME=1s", "PKGS=./protocol/proxyproto/", "FUZZ_EXHAUSTIVE=0"}, want: []string{"== github.com/enclavekit/enclavekit/protocol/proxyproto FuzzParse (1s)", "FuzzAppendParse"}},
		{args: []string{"bench", "BENCHTIME=1x", "PKGS=./protocol/proxyproto/"}, re: benchLine},
		{args: []string{"soak", "SOAKTIME=3s"}, want: []string{"\nPASS\n"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if (tt.args[0] == "eif" || tt.args[0] == "pin-base-image") && eifTools {
				t.Skip("Docker and nitro-cli are here: make eif builds a real image; run it by hand (docs/deploy.md)")
			}
			got, err := makeIn(t, tt.args...)
			if (err != nil) != tt.fail {
				t.Fatalf("make %s: %v (want failure: %v)\n%s", strings.Join(tt.args, " "), err, tt.fail, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
			if tt.re != nil && !tt.re.MatchString(got) {
				t.Errorf("output does not match %s:\n%s", tt.re, got)
			}
		})
	}
	for _, bin := range []string{"enclavekit", "enclaved"} {
		got, err := exec.Command(filepath.Join(out, "bin", bin), "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(got), bin) {
			t.Errorf("installed %s --version: %v: %s", bin, err, got)
		}
	}
}

var pcrLine = regexp.MustCompile(`(?m)^(PCR[0-9]+) ([0-9a-f]{96})$`)

// pcrsOf returns the PCR lines of enclavekit eif pcrs output.
func pcrsOf(out string) map[string]string {
	m := map[string]string{}
	for _, l := range pcrLine.FindAllStringSubmatch(out, -1) {
		m[l[1]] = l[2]
	}
	return m
}

// TestDeployDocCommands runs docs/deploy.md's build commands as written,
// in the checkout, with the outputs (bin/..., enclave.eif) moved to a
// scratch directory and BLOBS pointing at a fake set of nitro-cli's
// blobs: the go build that make enclaved runs gives make's binary; the
// step-by-step EIF build gives make eif-nodocker's PCRs; a signed build
// keeps PCR0-2 and adds PCR8; eif describe and pcrs inspect it; kms policy
// pins its PCR0. The instance set-up, run and debug blocks need a Nitro
// instance (```sh ec2).
func TestDeployDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds enclaved and images")
	}
	const page = "../../docs/deploy.md"
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	env := withEnclavekit(t, filepath.Join(tmp, "tools"))
	blobs := fakeBlobs(t)
	moved := strings.NewReplacer(" bin/", " "+tmp+"/bin/", "BLOBS=/usr/share/nitro_enclaves/blobs", "BLOBS="+blobs,
		" enclave.eif", " "+filepath.Join(tmp, "enclave.eif"), " signing-", " "+filepath.Join(tmp, "signing-"))

	// make enclaved, and the command the page says it runs.
	mk := filepath.Join(tmp, "make")
	got, err := makeIn(t, "eif-nodocker", "BLOBS="+blobs, "BIN_DIR="+mk, "EIF_OUT="+filepath.Join(mk, "enclave.eif"))
	if err != nil {
		t.Fatalf("make eif-nodocker: %v\n%s", err, got)
	}
	makeSum := sha256Of.FindString(got)
	makePCRs := pcrsOf(got)
	if makeSum == "" || len(makePCRs) != 3 {
		t.Fatalf("make eif-nodocker printed no SHA-256 or PCRs:\n%s", got)
	}
	out := shell(t, repo, env, moved.Replace(docScript(t, page, "CGO_ENABLED=0"))+"\nsha256sum "+tmp+"/bin/enclaved")
	if docSum := sha256Of.FindString(out); docSum[:64] != makeSum[:64] {
		t.Errorf("the page's go build gives %s, make enclaved %s", docSum[:64], makeSum[:64])
	}

	// The step-by-step EIF build: make eif-nodocker's PCRs.
	out = shell(t, repo, env, moved.Replace(docScript(t, page, "BLOBS=/usr/share/nitro_enclaves/blobs")))
	if byHand := pcrsOf(out); !equalPCRs(byHand, makePCRs) {
		t.Errorf("step by step: %v; make eif-nodocker: %v", byHand, makePCRs)
	}

	// Signing: the same PCR0-2, and PCR8.
	out = shell(t, repo, env, "BLOBS="+blobs+"\n"+moved.Replace(docScript(t, page, "openssl ecparam")))
	if !strings.Contains(out, `"PCR8"`) {
		t.Errorf("signed build printed no PCR8:\n%s", out)
	}
	out = shell(t, repo, env, moved.Replace(docScript(t, page, "enclavekit eif describe enclave.eif")))
	signed := pcrsOf(out)
	if !strings.Contains(out, `"CheckCRC": true`) || len(signed) != 4 || signed["PCR8"] == "" {
		t.Errorf("describe and pcrs of the signed image:\n%s", out)
	}
	delete(signed, "PCR8")
	if !equalPCRs(signed, makePCRs) {
		t.Errorf("signing changed PCR0-2: %v, unsigned %v", signed, makePCRs)
	}

	// The key policy pins that image.
	out = shell(t, repo, env, moved.Replace(docScript(t, page, "enclavekit kms policy")))
	if !strings.Contains(out, makePCRs["PCR0"]) || !strings.Contains(out, "arn:aws:iam::111122223333:role/enclave-parent") {
		t.Errorf("kms policy does not pin PCR0 %s for the role:\n%s", makePCRs["PCR0"], out)
	}
}

func equalPCRs(a, b map[string]string) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
