package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/build/cpio"
	"github.com/enclavekit/enclavekit/build/eif"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

type eifFixture struct {
	dir, kernel, boot, app string
}

func newEIFFixture(t *testing.T) eifFixture {
	t.Helper()
	dir := t.TempDir()
	f := eifFixture{dir: dir, kernel: filepath.Join(dir, "bzImage"), boot: filepath.Join(dir, "boot.cpio"), app: filepath.Join(dir, "app.cpio")}
	write := func(p string, b []byte) {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(f.kernel, bytes.Repeat([]byte("K"), 200))
	write(filepath.Join(dir, "init"), []byte("init-blob"))
	write(filepath.Join(dir, "nsm.ko"), []byte("nsm-blob"))
	write(filepath.Join(dir, "enclaved"), []byte("\x7fELF static"))
	write(filepath.Join(dir, "ca.crt"), []byte("CA"))
	if code, _, stderr := runCLI(t, "eif", "ramdisk", "bootstrap", "--init", filepath.Join(dir, "init"), "--nsm", filepath.Join(dir, "nsm.ko"), "-o", f.boot); code != 0 {
		t.Fatalf("ramdisk bootstrap: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "eif", "ramdisk", "app", "--binary", filepath.Join(dir, "enclaved"), "--cmd", "/enclaved", "--cmd", "-v",
		"--env", "A=1", "--file", filepath.Join(dir, "ca.crt")+":/etc/ssl/certs/ca-certificates.crt", "-o", f.app); code != 0 {
		t.Fatalf("ramdisk app: %d %s", code, stderr)
	}
	return f
}

func (f eifFixture) build(t *testing.T, out string, extra ...string) string {
	t.Helper()
	args := append([]string{"eif", "build", "--kernel", f.kernel, "--cmdline", "console=ttyS0", "--ramdisk", f.boot, "--ramdisk", f.app,
		"--name", "demo", "--version", "1.2.3", "-o", out}, extra...)
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("eif build: %d %s", code, stderr)
	}
	return stdout
}

func TestEIFBuildDescribePCRs(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	f := newEIFFixture(t)
	out1, out2 := filepath.Join(f.dir, "a.eif"), filepath.Join(f.dir, "b.eif")
	buildOut := f.build(t, out1)
	f.build(t, out2)
	b1, _ := os.ReadFile(out1)
	b2, _ := os.ReadFile(out2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("two builds of the same inputs differ")
	}
	img, err := eif.Parse(b1)
	if err != nil {
		t.Fatal(err)
	}
	m := img.Measure()
	if !strings.Contains(buildOut, `"PCR0": "`+m.PCR0.String()) {
		t.Fatalf("build output lacks PCR0: %s", buildOut)
	}
	// The ramdisks are the cpio archives we built.
	files, _, err := cpio.Read(img.Ramdisks[1])
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, fl := range files {
		paths = append(paths, fl.Path)
		if fl.Path == "cmd" && string(fl.Data) != "/enclaved\n-v\n" {
			t.Errorf("cmd file %q", fl.Data)
		}
	}
	if !strings.Contains(strings.Join(paths, " "), "rootfs/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("app ramdisk paths %v", paths)
	}

	code, stdout, stderr := runCLI(t, "eif", "describe", out1)
	if code != 0 {
		t.Fatalf("describe: %d %s", code, stderr)
	}
	var d struct {
		EifVersion   int
		Measurements map[string]string
		IsSigned     bool
		CheckCRC     bool
		ImageName    string
		ImageVersion string
		Metadata     map[string]any
		Sizing       map[string]any
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if d.EifVersion != 4 || !d.CheckCRC || d.IsSigned || d.ImageName != "demo" || d.ImageVersion != "1.2.3" {
		t.Fatalf("describe: %+v", d)
	}
	if fi, err := os.Stat(out1); err != nil || d.Sizing["FileBytes"] != float64(fi.Size()) ||
		d.Sizing["MinMemoryMiB"] != float64(eif.SizingFor(fi.Size()).MemoryMiB) || d.Sizing["hugepages-2Mi"] != eif.SizingFor(fi.Size()).Hugepages2Mi {
		t.Fatalf("describe sizing: %v", d.Sizing)
	}
	if d.Measurements["HashAlgorithm"] != "Sha384 { ... }" || d.Measurements["PCR0"] != m.PCR0.String() ||
		d.Measurements["PCR1"] != m.PCR1.String() || d.Measurements["PCR2"] != m.PCR2.String() {
		t.Fatalf("measurements %v", d.Measurements)
	}
	if d.Metadata["BuildTime"] != "2023-11-14T22:13:20Z" || d.Metadata["BuildTool"] != "enclavekit" {
		t.Fatalf("metadata %v", d.Metadata)
	}
	if strings.Index(stdout, `"EifVersion"`) > strings.Index(stdout, `"Measurements"`) ||
		strings.Index(stdout, `"IsSigned"`) > strings.Index(stdout, `"CheckCRC"`) {
		t.Errorf("field order differs from nitro-cli:\n%s", stdout)
	}

	code, stdout, _ = runCLI(t, "eif", "pcrs", out1)
	want := "PCR0 " + m.PCR0.String() + "\nPCR1 " + m.PCR1.String() + "\nPCR2 " + m.PCR2.String() + "\n"
	if code != 0 || stdout != want {
		t.Fatalf("pcrs: %d\n%s", code, stdout)
	}
	if code, stdout, _ = runCLI(t, "eif", "pcrs", "--eif-path", out1); code != 0 || stdout != want {
		t.Fatalf("pcrs --eif-path: %d", code)
	}
}

func TestEIFDescribeEveryByteFlip(t *testing.T) {
	f := newEIFFixture(t)
	p := filepath.Join(f.dir, "a.eif")
	f.build(t, p)
	orig, _ := os.ReadFile(p)
	bad := filepath.Join(f.dir, "bad.eif")
	for i := range orig {
		b := bytes.Clone(orig)
		b[i] ^= 0xff
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "eif", "describe", bad)
		if code != exitFailure {
			t.Fatalf("flip at %d: exit %d", i, code)
		}
		if stdout != "" || !strings.Contains(stderr, "CRC-32 mismatch") || !strings.Contains(stderr, bad) {
			t.Fatalf("flip at %d: stdout %s\nstderr %s", i, stdout, stderr)
		}
		if code, _, _ := runCLI(t, "eif", "pcrs", bad); code != exitFailure {
			t.Fatalf("pcrs accepted a flip at %d", i)
		}
	}
	for _, n := range []int{0, 5, 547, 548, 600, len(orig) - 1} {
		if err := os.WriteFile(bad, orig[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "eif", "describe", bad)
		if code != exitFailure || stdout != "" || stderr == "" {
			t.Fatalf("truncated to %d: exit %d\n%s\n%s", n, code, stdout, stderr)
		}
	}
}

func writeCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "signer", Country: []string{"BE"}},
		NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(4e9, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certPath, keyPath
}

func TestEIFSigned(t *testing.T) {
	f := newEIFFixture(t)
	certPath, keyPath := writeCert(t, f.dir)
	p := filepath.Join(f.dir, "signed.eif")
	out := f.build(t, p, "--sign-cert", certPath, "--sign-key", keyPath)
	if !strings.Contains(out, `"PCR8"`) {
		t.Fatalf("build output lacks PCR8: %s", out)
	}
	code, stdout, stderr := runCLI(t, "eif", "describe", p)
	if code != 0 {
		t.Fatalf("describe: %d %s", code, stderr)
	}
	for _, want := range []string{`"IsSigned": true`, `"SignatureCheck": true`, `"PCR8": "`, `"commonName": "signer"`, `"Algorithm": "ecdsa-with-SHA384"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("describe lacks %s:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI(t, "eif", "pcrs", p)
	if code != 0 || !strings.Contains(stdout, "\nPCR8 ") {
		t.Fatalf("pcrs: %d %s", code, stdout)
	}
	// PCRs 0..2 do not depend on signing.
	u := filepath.Join(f.dir, "unsigned.eif")
	f.build(t, u)
	_, unsignedPCRs, _ := runCLI(t, "eif", "pcrs", u)
	if !strings.HasPrefix(stdout, unsignedPCRs) {
		t.Fatalf("signing changed PCR0..2:\n%s\n%s", stdout, unsignedPCRs)
	}
}

func TestEIFUsage(t *testing.T) {
	f := newEIFFixture(t)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"eif"}, exitUsage, "usage"},
		{[]string{"eif", "frob"}, exitUsage, "unknown subcommand"},
		{[]string{"eif", "build", "--kernel", f.kernel, "--cmdline", "console=ttyS0", "--ramdisk", f.boot}, exitUsage, "-o is required"},
		{[]string{"eif", "build", "--ramdisk", f.boot, "-o", "x"}, exitUsage, "--kernel is required"},
		{[]string{"eif", "build", "--kernel", f.kernel, "-o", "x"}, exitUsage, "--ramdisk"},
		{[]string{"eif", "build", "--kernel", f.kernel, "--cmdline", "c", "--ramdisk", f.boot, "-o", "x", "--sign-cert", "c"}, exitUsage, "go together"},
		{[]string{"eif", "build", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"eif", "build", "--kernel", f.kernel, "--ramdisk", f.boot, "-o", "x"}, exitUsage, "--cmdline is empty"},
		{[]string{"eif", "build", "--app", f.kernel, "--kernel", f.kernel, "-o", "x"}, exitUsage, "drop --kernel"},
		{[]string{"eif", "build", "--kernel", f.kernel, "--ramdisk", f.boot, "--cmd", "x", "-o", "x"}, exitUsage, "go with --app"},
		{[]string{"eif", "build", "--app", f.kernel, "--blobs", f.dir, "-o", filepath.Join(f.dir, "o.eif")}, exitFailure, "cmdline not found in"},
		{[]string{"eif", "build", "--arch", "riscv", "--app", f.kernel, "-o", "x"}, exitUsage, "want x86_64 or aarch64"},
		{[]string{"eif", "build", "-h"}, exitOK, "usage: enclavekit eif build (--app BINARY"},
		{[]string{"eif", "ramdisk", "--help"}, exitOK, "enclavekit eif ramdisk app --binary FILE"},
		{[]string{"eif", "build", "--kernel", filepath.Join(f.dir, "missing"), "--cmdline", "c", "--ramdisk", f.boot, "-o", filepath.Join(f.dir, "o.eif")}, exitFailure, "missing"},
		{[]string{"eif", "describe"}, exitUsage, "exactly one"},
		{[]string{"eif", "describe", "a", "b"}, exitUsage, "exactly one"},
		{[]string{"eif", "describe", filepath.Join(f.dir, "nope.eif")}, exitFailure, "nope.eif"},
		{[]string{"eif", "pcrs", f.kernel}, exitFailure, f.kernel + ": eif: truncated"},
		{[]string{"eif", "ramdisk"}, exitUsage, "bootstrap"},
		{[]string{"eif", "ramdisk", "bootstrap", "--init", filepath.Join(f.dir, "none"), "-o", filepath.Join(f.dir, "x")}, exitFailure, "install aws-nitro-enclaves-cli"},
		{[]string{"eif", "ramdisk", "app", "-o", "x"}, exitUsage, "--binary is required"},
		{[]string{"eif", "help"}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Fatalf("exit %d (want %d)\nstdout %s\nstderr %s\nwant %q", code, tt.code, stdout, stderr, tt.want)
			}
		})
	}
}

// TestEIFBuildApp: one command from a team's binary and nitro-cli's blobs
// gives the same image as the ramdisk and build steps by hand.
func TestEIFBuildApp(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	f := newEIFFixture(t)
	blobs := filepath.Join(f.dir, "blobs")
	os.Mkdir(blobs, 0o755)
	kernel, _ := os.ReadFile(f.kernel)
	for name, b := range map[string][]byte{"bzImage": kernel, "Image": kernel, "cmdline": []byte("console=ttyS0\n"),
		"init": []byte("init-blob"), "nsm.ko": []byte("nsm-blob")} {
		os.WriteFile(filepath.Join(blobs, name), b, 0o644)
	}
	app := filepath.Join(f.dir, "enclaved")
	oneStep := filepath.Join(f.dir, "one.eif")
	code, stdout, stderr := runCLI(t, "eif", "build", "--app", app, "--blobs", blobs, "--name", "demo", "--version", "1", "-o", oneStep)
	if code != exitOK || !strings.Contains(stdout, `"PCR0"`) {
		t.Fatalf("build --app: exit %d\n%s%s", code, stdout, stderr)
	}
	// By hand: the same ramdisks and kernel.
	boot, appRD := filepath.Join(f.dir, "b.cpio"), filepath.Join(f.dir, "a.cpio")
	runCLI(t, "eif", "ramdisk", "bootstrap", "--init", filepath.Join(blobs, "init"), "--nsm", filepath.Join(blobs, "nsm.ko"), "-o", boot)
	runCLI(t, "eif", "ramdisk", "app", "--binary", app, "-o", appRD)
	byHand := filepath.Join(f.dir, "hand.eif")
	if code, _, stderr := runCLI(t, "eif", "build", "--kernel", f.kernel, "--cmdline", "console=ttyS0", "--ramdisk", boot, "--ramdisk", appRD,
		"--name", "demo", "--version", "1", "-o", byHand); code != exitOK {
		t.Fatalf("build by hand: %s", stderr)
	}
	a, _ := os.ReadFile(oneStep)
	b, _ := os.ReadFile(byHand)
	if !bytes.Equal(a, b) {
		t.Fatal("build --app differs from the same image built step by step")
	}
	if code, stdout, stderr := runCLI(t, "eif", "build", "--app", app, "--blobs", blobs, "--arch", "arm64", "-o", filepath.Join(f.dir, "arm.eif")); code != exitOK || !strings.Contains(stdout, "PCR0") {
		t.Fatalf("--arch arm64: exit %d %s", code, stderr)
	}
	img, _, err := eif.ReadFile(filepath.Join(f.dir, "arm.eif"), eif.ParseOptions{})
	if err != nil || img.Flags&eif.FlagARM64 == 0 {
		t.Fatalf("--arch arm64 did not build an aarch64 image: %v", err)
	}
}
