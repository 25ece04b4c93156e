package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

func TestEnv(t *testing.T) {
	env := Env([]string{"HOME=/h", "CGO_ENABLED=1", "GOFLAGS=-race", "GOOS=darwin", "SOURCE_DATE_EPOCH=9"}, 42, "linux", "")
	got := strings.Join(env, " ")
	want := "HOME=/h CGO_ENABLED=0 SOURCE_DATE_EPOCH=42 GOFLAGS= GOOS=linux"
	if got != want {
		t.Fatalf("got %q", got)
	}
	c := Command{Output: "x"}
	if c.Validate() == nil {
		t.Fatal("missing package accepted")
	}
}

// copyFixture copies testdata/reprofixture into dir as a standalone module.
func copyFixture(t *testing.T, dir string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "reprofixture", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/reprofixture\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Different mtimes for the two copies: they must not matter.
	mt := time.Unix(int64(len(dir))*1000, 0)
	_ = os.Chtimes(filepath.Join(dir, "main.go"), mt, mt)
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestReproducibleBuild builds the fixture from two source trees at
// different paths, with different mtimes, the second with an empty build
// cache (so the standard library is recompiled), and requires identical SHA-256 and a static binary.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary twice")
	}
	goBin := testutil.GoCommand(t, "to build with")
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sums []string
	for i, dir := range []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "second", "copy", "of", "the", "tree")} {
		copyFixture(t, dir)
		out := filepath.Join(tmp, "bin"+string(rune('0'+i)))
		c := Command{Go: goBin, Dir: dir, Package: ".", Output: out, SourceDateEpoch: 1700000000, GOOS: "linux",
			ExtraEnv: []string{"GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local"}}
		if i == 1 {
			// A fresh build cache: the standard library is recompiled too.
			c.ExtraEnv = append(c.ExtraEnv, "GOCACHE="+filepath.Join(tmp, "gocache"))
		}
		if err := c.Run(ctx); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha256File(t, out))
		f, err := elf.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not static", out)
			}
		}
		if syms, _ := f.Symbols(); len(syms) != 0 {
			t.Errorf("%s keeps %d symbols despite -s", out, len(syms))
		}
		f.Close()
		b, _ := os.ReadFile(out)
		if bytes.Contains(b, []byte(tmp)) {
			t.Errorf("%s contains the build path %s", out, tmp)
		}
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds differ: %s vs %s", sums[0], sums[1])
	}
	t.Logf("sha256 %s", sums[0])
}
