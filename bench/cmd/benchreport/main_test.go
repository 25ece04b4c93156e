package main

import (
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportSmoke runs the tool as make bench-report does, with one round
// of tiny samples, and checks the report it writes: the machine, the
// noise warning, the rerun command, and charts that are well-formed SVG.
// The figures themselves are not checked: they are benchmarks.
func TestReportSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole benchmark set once")
	}
	exe := filepath.Join(t.TempDir(), "benchreport")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := t.TempDir()
	cmd := exec.Command(exe, "-out", out, "-rounds", "1", "-sample", "100ms", "-idle-conns", "20")
	cmd.Dir = "../.." // the bench module, as make bench-report runs it
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("benchreport: %v\n%s", err, b)
	}
	md, err := os.ReadFile(filepath.Join(out, "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"make bench-report", "noisy", "Go "} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(out, "bench", "*.svg"))
	if len(svgs) == 0 {
		t.Fatal("no charts written")
	}
	for _, f := range svgs {
		b, _ := os.ReadFile(f)
		d := xml.NewDecoder(strings.NewReader(string(b)))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Errorf("%s is not well-formed: %v", f, err)
				break
			}
		}
	}
}
