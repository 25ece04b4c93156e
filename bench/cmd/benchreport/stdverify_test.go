package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/attest"
)

// benchDoc is attestDoc as seen from this package's directory, where go
// test runs.
const benchDoc = "../../" + attestDoc

func readBenchDoc(t testing.TB) []byte {
	t.Helper()
	doc, err := os.ReadFile(filepath.FromSlash(benchDoc))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestStdVerify checks that the report's standard-library peer does the
// work it is timed for: it accepts every real document of the attest
// corpus and rejects a document whose signature, signed payload or chain
// is wrong.
func TestStdVerify(t *testing.T) {
	files, err := filepath.Glob(filepath.FromSlash("../../../attest/testdata/valid/*.cbor"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no attest corpus: %v", err)
	}
	roots := attest.AWSRoots()
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := stdVerify(doc, roots); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}

	doc := readBenchDoc(t)
	flip := func(i int) []byte {
		b := bytes.Clone(doc)
		b[i] ^= 0x01
		return b
	}
	for _, tc := range []struct {
		name  string
		doc   []byte
		roots *x509.CertPool
		want  string
	}{
		{"signature byte flipped", flip(len(doc) - 1), roots, "signature does not verify"},
		{"module_id byte flipped", flip(bytes.Index(doc, []byte("i-0809849710bf1b61b"))), roots, "signature does not verify"},
		{"no trusted root", doc, x509.NewCertPool(), "chain:"},
		{"truncated", doc[:len(doc)/2], roots, "COSE_Sign1:"},
		{"empty", nil, roots, "COSE_Sign1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := stdVerify(tc.doc, tc.roots)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("stdVerify = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestAttestPeers checks that every row of the attestation table verifies
// the benchmark document.
func TestAttestPeers(t *testing.T) {
	peers, err := attestPeers(readBenchDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		for range 2 { // the second call of the cached peer hits the cache
			if err := p.verify(); err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
		}
	}
}

// Environment of the helper run by TestP384VerificationsPerDocument.
const (
	countPeerEnv = "BENCHREPORT_COUNT_PEER"
	countNEnv    = "BENCHREPORT_COUNT_N"
)

// TestCountHelper verifies the benchmark document N times with one peer.
// On its own it does nothing; TestP384VerificationsPerDocument runs it in a
// build whose crypto/ecdsa counts its calls.
func TestCountHelper(t *testing.T) {
	name := os.Getenv(countPeerEnv)
	if name == "" {
		t.Skip("helper of TestP384VerificationsPerDocument")
	}
	n, err := strconv.Atoi(os.Getenv(countNEnv))
	if err != nil {
		t.Fatal(err)
	}
	peers, err := attestPeers(readBenchDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.name != name {
			continue
		}
		for range n {
			if err := p.verify(); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	t.Fatalf("no peer %q", name)
}

// TestP384VerificationsPerDocument counts the P-384 ECDSA verifications
// each row of the attestation table performs per document, and checks the
// figures the report prints. It builds this package's tests with
// crypto/ecdsa instrumented for coverage counting (the counter of the
// P-384 branch of ecdsa.VerifyASN1, which crypto/x509 and ecdsa.Verify
// both go through), runs TestCountHelper for each peer with 1 and with
// 1+k documents, and takes the difference over k, so that set-up (the
// floor's preparation, the cached peer's first, full verification) cancels.
func TestP384VerificationsPerDocument(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an instrumented test binary")
	}
	line, err := p384BranchLine()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "count.test")
	build := exec.Command("go", "test", "-c", "-o", exe, "-covermode=count", "-coverpkg=crypto/ecdsa", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	peers, err := attestPeers(readBenchDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	const k = 10
	for i, p := range peers {
		count := func(n int) int {
			prof := filepath.Join(dir, fmt.Sprintf("cover-%d-%d.out", i, n))
			cmd := exec.Command(exe, "-test.run=^TestCountHelper$", "-test.count=1", "-test.coverprofile="+prof)
			cmd.Env = append(os.Environ(), countPeerEnv+"="+p.name, countNEnv+"="+strconv.Itoa(n))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", p.name, err, out)
			}
			c, err := branchCount(prof, line)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		one, many := count(1), count(1+k)
		if (many-one)%k != 0 {
			t.Errorf("%s: %d verifications for %d more documents, not a whole number per document", p.name, many-one, k)
			continue
		}
		if got := (many - one) / k; got != p.p384 {
			t.Errorf("%s: %d P-384 verifications per document, the report says %d", p.name, got, p.p384)
		} else {
			t.Logf("%s: %d P-384 verifications per document", p.name, got)
		}
	}
}

// p384BranchLine finds the line of crypto/ecdsa's VerifyASN1 that
// dispatches a P-384 key, in the Go tree this test is built with.
func p384BranchLine() (int, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return 0, fmt.Errorf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src", "crypto", "ecdsa", "ecdsa.go")
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	inVerify := false
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "func VerifyASN1("):
			inVerify = true
		case strings.HasPrefix(l, "}"):
			inVerify = false
		case inVerify && strings.Contains(l, "verifyFIPS(ecdsa.P384()"):
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no P-384 branch in VerifyASN1; this Go version dispatches curves differently, update the test", src)
}

// branchCount returns the execution count of the crypto/ecdsa/ecdsa.go
// coverage block that holds line, from a count-mode profile.
func branchCount(profile string, line int) (int, error) {
	b, err := os.ReadFile(profile)
	if err != nil {
		return 0, err
	}
	found, total := 0, 0
	for _, l := range strings.Split(string(b), "\n") {
		// crypto/ecdsa/ecdsa.go:511.34,512.48 1 7
		pos, rest, ok := strings.Cut(l, " ")
		file, span, ok2 := strings.Cut(pos, ":")
		if !ok || !ok2 || file != "crypto/ecdsa/ecdsa.go" {
			continue
		}
		from, to, _ := strings.Cut(span, ",")
		start, _ := strconv.Atoi(strings.Split(from, ".")[0])
		end, _ := strconv.Atoi(strings.Split(to, ".")[0])
		if start > line || end < line {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 {
			return 0, fmt.Errorf("%s: malformed line %q", profile, l)
		}
		c, err := strconv.Atoi(fields[1])
		if err != nil {
			return 0, fmt.Errorf("%s: malformed line %q", profile, l)
		}
		found++
		total += c
	}
	if found != 1 {
		return 0, fmt.Errorf("%s: %d coverage blocks hold crypto/ecdsa/ecdsa.go:%d, want 1", profile, found, line)
	}
	return total, nil
}

// BenchmarkAttest times each row of the attestation table, for use with
// go test -bench and benchstat (the report interleaves them itself).
func BenchmarkAttest(b *testing.B) {
	peers, err := attestPeers(readBenchDoc(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range peers {
		b.Run(strings.ReplaceAll(p.name, " ", "_"), func(b *testing.B) {
			if err := p.verify(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := p.verify(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
		})
	}
}
