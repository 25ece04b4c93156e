package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclavekit/enclavekit/build/cpio"
	"github.com/enclavekit/enclavekit/build/eif"
	"github.com/enclavekit/enclavekit/build/eifsig"
)

const eifUsage = `usage: enclavekit eif SUBCOMMAND [flags]

subcommands:
  build     --app BINARY [--blobs DIR] [--cmd ARG]... [--env K=V]... [--file SRC:DST]...
            [--arch x86_64|aarch64] [--name N --version V] [--sign-cert PEM --sign-key PEM] -o OUT.eif
            one command for your own static Go binary: nitro-cli's kernel, cmdline,
            init and nsm.ko from --blobs (default /usr/share/nitro_enclaves/blobs), no Docker
  build     --kernel FILE --cmdline STRING --ramdisk FILE [--ramdisk FILE]...
            [--name N --version V] [--sign-cert PEM --sign-key PEM] -o OUT.eif
  describe  FILE      JSON in the shape of "nitro-cli describe-eif"; exit 1 on
                      a CRC, structure or signature failure
  pcrs      FILE      one "PCRn hex" line per register
  ramdisk bootstrap [--init FILE] [--nsm FILE] -o OUT      (no Docker needed)
  ramdisk app --binary FILE [--path /enclaved] [--cmd ARG]... [--env K=V]...
              [--file SRC:DST]... -o OUT

Timestamps come from SOURCE_DATE_EPOCH (default 0), so the same inputs give
the same bytes.
`

func runEIF(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, eifUsage)
		return exitUsage
	}
	switch args[0] {
	case "build":
		return eifBuild(args[1:], stdout, stderr)
	case "describe":
		return eifDescribe(args[1:], stdout, stderr)
	case "pcrs":
		return eifPCRs(args[1:], stdout, stderr)
	case "ramdisk":
		return eifRamdisk(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, eifUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "enclavekit eif: unknown subcommand %q\n\n%s", args[0], eifUsage)
	return exitUsage
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("enclavekit eif "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: enclavekit eif %s %s\n\nflags:\n", name, eifSynopsis[name])
		fs.PrintDefaults()
	}
	return fs
}

// eifSynopsis is each subcommand's usage line, required flags first.
var eifSynopsis = map[string]string{
	"build":             "(--app BINARY [--blobs DIR] | --kernel FILE --cmdline STRING --ramdisk FILE...) -o OUT.eif [flags]",
	"describe":          "FILE",
	"pcrs":              "FILE",
	"ramdisk bootstrap": "[--init FILE] [--nsm FILE] -o OUT",
	"ramdisk app":       "--binary FILE [--path /enclaved] [--cmd ARG]... [--env K=V]... [--file SRC:DST]... -o OUT",
}

// parseFlags returns -1 to continue, or an exit code.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := parseFlagSet(fs, args); err != nil {
		return flagExit(err)
	}
	return -1
}

func usageErr(stderr io.Writer, name, format string, args ...any) int {
	fmt.Fprintf(stderr, "enclavekit eif %s: %s\n", name, fmt.Sprintf(format, args...))
	return exitUsage
}

func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "enclavekit eif %s: %v\n", name, err)
	return exitFailure
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org); unset is 0.
func sourceDateEpoch() (int64, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > cpio.MaxMTime {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a Unix time in 0..%d", v, int64(cpio.MaxMTime))
	}
	return n, nil
}

func eifBuild(args []string, stdout, stderr io.Writer) int {
	const name = "build"
	fs := newFlagSet(name, stderr)
	kernel := fs.String("kernel", "", "kernel image `FILE` (e.g. "+cpio.DefaultKernelPath+")")
	cmdline := fs.String("cmdline", "", "kernel command line `STRING` (e.g. the contents of "+cpio.DefaultCmdlinePath+")")
	var ramdisks listFlag
	fs.Var(&ramdisks, "ramdisk", "ramdisk `FILE`, repeatable: bootstrap first, then the application")
	imgName := fs.String("name", "enclave", "image name recorded in the metadata")
	imgVersion := fs.String("version", "", "image version recorded in the metadata (default: PCR0's first 16 hex digits)")
	certPath := fs.String("sign-cert", "", "PEM signing certificate (P-384); adds a signature section and PCR8")
	keyPath := fs.String("sign-key", "", "PEM private key of --sign-cert")
	arch := fs.String("arch", "x86_64", "image architecture: x86_64 or aarch64")
	memMiB := fs.Uint64("memory", eif.DefaultMemory>>20, "default enclave memory in MiB recorded in the header")
	cpus := fs.Uint64("cpus", eif.DefaultCPUs, "default enclave CPU count recorded in the header")
	kernelVersion := fs.String("kernel-version", "", "kernel version recorded in the metadata")
	allowEmpty := fs.Bool("allow-empty-cmdline", false, "build with an empty kernel command line (nitro-cli's blobs have one in cmdline; an empty one rarely boots)")
	appBinary := fs.String("app", "", "your static `BINARY`: build the whole image from it and nitro-cli's blobs (instead of --kernel, --cmdline and --ramdisk)")
	blobs := fs.String("blobs", cpio.DefaultBlobsDir, "with --app: nitro-cli's blobs `DIR` (kernel, cmdline, init, nsm.ko)")
	var appCmd, appEnv, appFiles listFlag
	fs.Var(&appCmd, "cmd", "with --app: one argument of the command init runs, repeatable (default: the binary)")
	fs.Var(&appEnv, "env", "with --app: NAME=value for the environment, repeatable")
	fs.Var(&appFiles, "file", "with --app: SRC:DST extra file for the root filesystem, repeatable")
	out := fs.String("o", "", "output `FILE`")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	switch *arch {
	case "arm64":
		*arch = "aarch64" // Go's and Docker's name for it
	case "amd64":
		*arch = "x86_64"
	}
	switch {
	case fs.NArg() != 0:
		return usageErr(stderr, name, "unexpected arguments %q; every input is a flag (--app, --kernel, --ramdisk)", fs.Args())
	case *appBinary != "" && (*kernel != "" || len(ramdisks) != 0 || *cmdline != ""):
		return usageErr(stderr, name, "--app builds the kernel, cmdline and ramdisks from --blobs; drop --kernel, --cmdline and --ramdisk, or drop --app")
	case *appBinary == "" && (len(appCmd) != 0 || len(appEnv) != 0 || len(appFiles) != 0):
		return usageErr(stderr, name, "--cmd, --env and --file go with --app (or with enclavekit eif ramdisk app)")
	case *appBinary == "" && *kernel == "":
		return usageErr(stderr, name, "--kernel is required (or --app BINARY to build from nitro-cli's blobs)")
	case *appBinary == "" && len(ramdisks) == 0:
		return usageErr(stderr, name, "at least one --ramdisk is required (bootstrap first, then the application)")
	case *appBinary == "" && *cmdline == "" && !*allowEmpty:
		return usageErr(stderr, name, "--cmdline is empty: pass the kernel command line (nitro-cli's is in %s), or --allow-empty-cmdline", cpio.DefaultCmdlinePath)
	case *out == "":
		return usageErr(stderr, name, "-o is required: the EIF file to write")
	case (*certPath == "") != (*keyPath == ""):
		return usageErr(stderr, name, "--sign-cert and --sign-key go together")
	case *arch != "x86_64" && *arch != "aarch64":
		return usageErr(stderr, name, "--arch %q: want x86_64 or aarch64 (arm64 and amd64 are accepted too)", *arch)
	case *memMiB == 0 || *memMiB > 1<<44 || *cpus == 0:
		return usageErr(stderr, name, "--memory and --cpus must be positive")
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return usageErr(stderr, name, "%v", err)
	}
	spec := eif.Spec{Cmdline: *cmdline, DefaultMemory: *memMiB << 20, DefaultCPUs: *cpus}
	if *appBinary != "" {
		if err := appImage(&spec, *appBinary, *blobs, *arch, appCmd, appEnv, appFiles, epoch); err != nil {
			return fail(stderr, name, err)
		}
	}
	if *arch == "aarch64" {
		spec.Flags = eif.FlagARM64
	}
	if *appBinary == "" {
		if spec.Kernel, err = os.ReadFile(*kernel); err != nil {
			return fail(stderr, name, err)
		}
		for _, r := range ramdisks {
			b, err := os.ReadFile(r)
			if err != nil {
				return fail(stderr, name, err)
			}
			spec.Ramdisks = append(spec.Ramdisks, b)
		}
	}
	if *certPath != "" {
		certPEM, err := os.ReadFile(*certPath)
		if err != nil {
			return fail(stderr, name, err)
		}
		keyPEM, err := os.ReadFile(*keyPath)
		if err != nil {
			return fail(stderr, name, err)
		}
		s, err := eifsig.NewSigner(certPEM, keyPEM)
		if err != nil {
			return fail(stderr, name, fmt.Errorf("%s, %s: %w", *certPath, *keyPath, err))
		}
		spec.Signer = s
	}
	version := *imgVersion
	if version == "" {
		m := eif.Measure(spec.Kernel, []byte(spec.Cmdline), spec.Ramdisks)
		version = m.PCR0.String()[:16]
	}
	md := eif.Metadata{
		ImageName:    *imgName,
		ImageVersion: version,
		BuildMetadata: eif.BuildInfo{
			BuildTime:        time.Unix(epoch, 0).UTC().Format(time.RFC3339),
			BuildTool:        "enclavekit",
			BuildToolVersion: "1",
			OperatingSystem:  "Linux",
			KernelVersion:    *kernelVersion,
		},
	}
	if spec.Metadata, err = md.Marshal(); err != nil {
		return fail(stderr, name, err)
	}
	b, m, err := eif.Build(spec)
	if err != nil {
		return fail(stderr, name, err)
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return fail(stderr, name, err)
	}
	// nitro-cli build-enclave prints {"Measurements": {...}}.
	return printJSON(stdout, stderr, name, struct {
		Measurements measurementsJSON `json:"Measurements"`
	}{toMeasurementsJSON(m)})
}

// appImage fills spec from a team's own binary and nitro-cli's blobs: the
// kernel (bzImage, or Image on aarch64) and its command line, a bootstrap
// ramdisk of init and nsm.ko, and an application ramdisk holding the
// binary, as nitro-cli build-enclave lays them out, without Docker.
func appImage(spec *eif.Spec, binary, blobs, arch string, cmd, env, files []string, epoch int64) error {
	kernelName := "bzImage"
	if arch == "aarch64" {
		kernelName = "Image"
	}
	blob := func(name string) ([]byte, error) {
		b, err := os.ReadFile(blobs + "/" + name)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s not found in %s: point --blobs at nitro-cli's blobs (aws-nitro-enclaves-cli puts them in %s)", name, blobs, cpio.DefaultBlobsDir)
		}
		return b, err
	}
	var err error
	if spec.Kernel, err = blob(kernelName); err != nil {
		return err
	}
	cmdline, err := blob("cmdline")
	if err != nil {
		return err
	}
	spec.Cmdline = strings.TrimRight(string(cmdline), "\n")
	initB, err := blob("init")
	if err != nil {
		return err
	}
	nsmB, err := blob("nsm.ko")
	if err != nil {
		return err
	}
	opts := cpio.Options{MTime: epoch}
	boot, err := cpio.Bootstrap(initB, nsmB, opts)
	if err != nil {
		return err
	}
	app := cpio.App{Path: "/" + filepath.Base(binary), Cmd: cmd}
	if len(env) > 0 {
		app.Env = env
	}
	if app.Binary, err = os.ReadFile(binary); err != nil {
		return err
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("--file %q: want SRC:DST", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		app.Files = append(app.Files, cpio.File{Path: strings.TrimPrefix(dst, "/"), Mode: 0o644, Data: data})
	}
	appRD, err := cpio.Application(app, opts)
	if err != nil {
		return errors.New(libErr(err, ramdiskFlagNames))
	}
	spec.Ramdisks = [][]byte{boot, appRD}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

type measurementsJSON struct {
	HashAlgorithm string `json:"HashAlgorithm"`
	PCR0          string `json:"PCR0"`
	PCR1          string `json:"PCR1"`
	PCR2          string `json:"PCR2"`
	PCR8          string `json:"PCR8,omitempty"`
}

func toMeasurementsJSON(m eif.Measurements) measurementsJSON {
	j := measurementsJSON{HashAlgorithm: eif.HashAlgorithm, PCR0: m.PCR0.String(), PCR1: m.PCR1.String(), PCR2: m.PCR2.String()}
	if m.PCR8 != nil {
		j.PCR8 = m.PCR8.String()
	}
	return j
}

func printJSON(stdout, stderr io.Writer, name string, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fail(stderr, name, err)
	}
	b = append(b, '\n')
	if _, err := stdout.Write(b); err != nil {
		return fail(stderr, name, err)
	}
	return exitOK
}

// fileArg accepts FILE or --eif-path FILE (nitro-cli's spelling).
func fileArg(name string, args []string, stderr io.Writer) (string, int) {
	fs := newFlagSet(name, stderr)
	path := fs.String("eif-path", "", "EIF `FILE` (or give it as the argument)")
	if code := parseFlags(fs, args); code >= 0 {
		return "", code
	}
	switch {
	case *path != "" && fs.NArg() == 0:
		return *path, -1
	case *path == "" && fs.NArg() == 1:
		return fs.Arg(0), -1
	}
	return "", usageErr(stderr, name, "want exactly one EIF file")
}

// describeJSON follows EifDescribeInfo in aws-nitro-enclaves-cli
// src/common/json_output.rs; Error is ours, set when the file cannot be
// parsed or checked.
type describeJSON struct {
	EifVersion         uint16            `json:"EifVersion"`
	Measurements       *measurementsJSON `json:"Measurements,omitempty"`
	IsSigned           bool              `json:"IsSigned"`
	SigningCertificate *certInfoJSON     `json:"SigningCertificate,omitempty"`
	CheckCRC           bool              `json:"CheckCRC"`
	SignatureCheck     *bool             `json:"SignatureCheck,omitempty"`
	ImageName          string            `json:"ImageName,omitempty"`
	ImageVersion       string            `json:"ImageVersion,omitempty"`
	Metadata           json.RawMessage   `json:"Metadata,omitempty"`
	// Sizing is ours: the least --memory run-enclave accepts for this
	// file (four times its size) and the hugepages requests covering it.
	Sizing *sizingJSON `json:"Sizing,omitempty"`
	Error  string      `json:"Error,omitempty"`
}

type sizingJSON struct {
	FileBytes      int64  `json:"FileBytes"`
	MinMemoryMiB   uint64 `json:"MinMemoryMiB"`
	HugepagesReq2M string `json:"hugepages-2Mi"`
	HugepagesReq1G string `json:"hugepages-1Gi"`
}

type certInfoJSON struct {
	IssuerName map[string]string `json:"IssuerName"`
	Algorithm  string            `json:"Algorithm"`
	NotBefore  string            `json:"NotBefore"`
	NotAfter   string            `json:"NotAfter"`
	Signature  string            `json:"Signature"`
}

func eifDescribe(args []string, stdout, stderr io.Writer) int {
	const name = "describe"
	path, code := fileArg(name, args, stderr)
	if code >= 0 {
		return code
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(stderr, name, err)
	}
	var out describeJSON
	var problems []string
	sz := eif.SizingFor(int64(len(b)))
	out.Sizing = &sizingJSON{FileBytes: sz.FileBytes, MinMemoryMiB: sz.MemoryMiB, HugepagesReq2M: sz.Hugepages2Mi, HugepagesReq1G: sz.Hugepages1Gi}
	if len(b) >= 6 {
		out.EifVersion = uint16(b[4])<<8 | uint16(b[5])
	}
	stored, errS := eif.StoredCRC(b)
	computed, errC := eif.CRC(b)
	out.CheckCRC = errS == nil && errC == nil && stored == computed
	if errS == nil && errC == nil && stored != computed {
		problems = append(problems, fmt.Sprintf("%s: CRC-32 mismatch: header says 0x%08x, contents give 0x%08x", path, stored, computed))
	}
	img, err := eif.ParseWithOptions(b, eif.ParseOptions{IgnoreCRC: true})
	if err != nil {
		problems = append(problems, fmt.Sprintf("%s: %v", path, err))
		out.Error = err.Error()
	} else {
		describeImage(img, &out, &problems, path)
	}
	if len(problems) > 0 {
		// Nothing on stdout: PCRs of a file that fails its checks must not
		// look like an answer to a script reading them.
		for _, p := range problems {
			fmt.Fprintf(stderr, "enclavekit eif describe: %s\n", p)
		}
		return exitFailure
	}
	return printJSON(stdout, stderr, name, out)
}

func describeImage(img *eif.Image, out *describeJSON, problems *[]string, path string) {
	m := img.Measure()
	out.IsSigned = img.Signed()
	var errs []string
	if img.Signed() {
		cert, p8, err := eifsig.Inspect(img.Signature)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			m.PCR8 = &p8
			out.SigningCertificate = certInfo(cert)
			_, verr := eifsig.Verify(img.Signature, m.PCR0)
			ok := verr == nil
			out.SignatureCheck = &ok
			if verr != nil {
				errs = append(errs, verr.Error())
			}
		}
	}
	mj := toMeasurementsJSON(m)
	out.Measurements = &mj
	if img.Metadata != nil {
		md, err := eif.ParseMetadata(img.Metadata)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			out.ImageName, out.ImageVersion = md.ImageName, md.ImageVersion
			out.Metadata = metadataJSON(md)
		}
	}
	for _, e := range errs {
		*problems = append(*problems, path+": "+e)
	}
	out.Error = strings.Join(errs, "; ")
}

// metadataJSON renders MetadataDescribeInfo: the build fields, DockerInfo,
// then the custom metadata's keys flattened in, as nitro-cli's serde
// flatten does.
func metadataJSON(md *eif.Metadata) json.RawMessage {
	var buf bytes.Buffer
	buf.WriteByte('{')
	add := func(k string, v any) {
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			vb = []byte("null")
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
	}
	bi := md.BuildMetadata
	add("BuildTime", bi.BuildTime)
	add("BuildTool", bi.BuildTool)
	add("BuildToolVersion", bi.BuildToolVersion)
	add("OperatingSystem", bi.OperatingSystem)
	add("KernelVersion", bi.KernelVersion)
	docker := md.DockerInfo
	if len(docker) == 0 {
		docker = json.RawMessage("null")
	}
	add("DockerInfo", docker)
	var custom map[string]json.RawMessage
	if len(md.CustomMetadata) > 0 && json.Unmarshal(md.CustomMetadata, &custom) == nil {
		keys := make([]string, 0, len(custom))
		for k := range custom {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			add(k, custom[k])
		}
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

var attrNames = map[string]string{
	"2.5.4.3": "commonName", "2.5.4.6": "countryName", "2.5.4.7": "localityName",
	"2.5.4.8": "stateOrProvinceName", "2.5.4.10": "organizationName", "2.5.4.11": "organizationalUnitName",
	"1.2.840.113549.1.9.1": "emailAddress",
}

var sigAlgNames = map[x509.SignatureAlgorithm]string{
	x509.ECDSAWithSHA256: "ecdsa-with-SHA256", x509.ECDSAWithSHA384: "ecdsa-with-SHA384", x509.ECDSAWithSHA512: "ecdsa-with-SHA512",
}

// certInfo renders SignCertificateInfo with OpenSSL's names and formats.
func certInfo(c *x509.Certificate) *certInfoJSON {
	issuer := map[string]string{}
	for _, atv := range c.Issuer.Names {
		k := atv.Type.String()
		if n, ok := attrNames[k]; ok {
			k = n
		}
		issuer[k] = fmt.Sprint(atv.Value)
	}
	alg, ok := sigAlgNames[c.SignatureAlgorithm]
	if !ok {
		alg = c.SignatureAlgorithm.String()
	}
	var sig strings.Builder
	for i, x := range c.Signature {
		if i > 0 {
			sig.WriteByte(':')
		}
		fmt.Fprintf(&sig, "%02X", x)
	}
	const openssl = "Jan _2 15:04:05 2006 GMT"
	return &certInfoJSON{IssuerName: issuer, Algorithm: alg,
		NotBefore: c.NotBefore.UTC().Format(openssl), NotAfter: c.NotAfter.UTC().Format(openssl), Signature: sig.String()}
}

func eifPCRs(args []string, stdout, stderr io.Writer) int {
	const name = "pcrs"
	path, code := fileArg(name, args, stderr)
	if code >= 0 {
		return code
	}
	img, _, err := eif.ReadFile(path, eif.ParseOptions{})
	if err != nil {
		return fail(stderr, name, err)
	}
	m, err := eifsig.Measure(img)
	if err != nil {
		return fail(stderr, name, fmt.Errorf("%s: %w", path, err))
	}
	fmt.Fprintf(stdout, "PCR0 %s\nPCR1 %s\nPCR2 %s\n", m.PCR0, m.PCR1, m.PCR2)
	if m.PCR8 != nil {
		fmt.Fprintf(stdout, "PCR8 %s\n", m.PCR8)
	}
	return exitOK
}

func eifRamdisk(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintf(stdout, "usage:\n  enclavekit eif ramdisk bootstrap %s\n  enclavekit eif ramdisk app %s\n", eifSynopsis["ramdisk bootstrap"], eifSynopsis["ramdisk app"])
		return exitOK
	}
	if len(args) == 0 || (args[0] != "bootstrap" && args[0] != "app") {
		return usageErr(stderr, "ramdisk", "want \"bootstrap\" or \"app\"")
	}
	name := "ramdisk " + args[0]
	fs := newFlagSet(name, stderr)
	out := fs.String("o", "", "output `FILE`")
	initPath := fs.String("init", cpio.DefaultInitPath, "init `FILE` (bootstrap)")
	nsmPath := fs.String("nsm", cpio.DefaultNSMPath, "nsm.ko `FILE` (bootstrap)")
	binary := fs.String("binary", "", "static binary `FILE` for the root filesystem (app)")
	binPath := fs.String("path", "/enclaved", "absolute path of the binary inside the enclave (app)")
	var cmdArgs, env, files listFlag
	fs.Var(&cmdArgs, "cmd", "one argument of the command init runs, repeatable (app; default: --path)")
	fs.Var(&env, "env", "NAME=value for the environment, repeatable (app; default PATH only)")
	fs.Var(&files, "file", "SRC:DST extra file for the root filesystem, repeatable (app)")
	if code := parseFlags(fs, args[1:]); code >= 0 {
		return code
	}
	if fs.NArg() != 0 {
		return usageErr(stderr, name, "unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return usageErr(stderr, name, "-o is required")
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return usageErr(stderr, name, "%v", err)
	}
	opts := cpio.Options{MTime: epoch}
	var b []byte
	if args[0] == "bootstrap" {
		initB, err := readBlob(*initPath, "init")
		if err != nil {
			return fail(stderr, name, err)
		}
		nsmB, err := readBlob(*nsmPath, "nsm.ko")
		if err != nil {
			return fail(stderr, name, err)
		}
		if b, err = cpio.Bootstrap(initB, nsmB, opts); err != nil {
			return fail(stderr, name, err)
		}
	} else {
		if *binary == "" {
			return usageErr(stderr, name, "--binary is required")
		}
		app := cpio.App{Path: *binPath, Cmd: cmdArgs}
		if len(env) > 0 {
			app.Env = env
		}
		if app.Binary, err = os.ReadFile(*binary); err != nil {
			return fail(stderr, name, err)
		}
		for _, f := range files {
			src, dst, ok := strings.Cut(f, ":")
			if !ok || src == "" || dst == "" {
				return usageErr(stderr, name, "--file %q: want SRC:DST", f)
			}
			data, err := os.ReadFile(src)
			if err != nil {
				return fail(stderr, name, err)
			}
			app.Files = append(app.Files, cpio.File{Path: strings.TrimPrefix(dst, "/"), Mode: 0o644, Data: data})
		}
		if b, err = cpio.Application(app, opts); err != nil {
			return fail(stderr, name, errors.New(libErr(err, ramdiskFlagNames)))
		}
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return fail(stderr, name, err)
	}
	fmt.Fprintf(stdout, "%s: %d bytes\n", *out, len(b))
	return exitOK
}

func readBlob(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s blob %s not found: install aws-nitro-enclaves-cli (it puts init, nsm.ko, the kernel and cmdline in %s) or pass --%s FILE",
			what, path, cpio.DefaultBlobsDir, strings.TrimSuffix(what, ".ko"))
	}
	return b, err
}
