package cpio

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// Paths of the blobs nitro-cli installs (aws-nitro-enclaves-cli packaging).
const (
	DefaultBlobsDir = "/usr/share/nitro_enclaves/blobs"
	DefaultInitPath = DefaultBlobsDir + "/init"
	DefaultNSMPath  = DefaultBlobsDir + "/nsm.ko"
	// DefaultKernelPath is bzImage on x86_64; arm64 hosts have Image.
	DefaultKernelPath  = DefaultBlobsDir + "/bzImage"
	DefaultCmdlinePath = DefaultBlobsDir + "/cmdline"
)

// DefaultEnv is the environment Docker gives a FROM scratch image.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// BootstrapFiles lays out the bootstrap ramdisk as nitro-cli does: dev/,
// init and nsm.ko.
func BootstrapFiles(init, nsm []byte) ([]File, error) {
	if len(init) == 0 || len(nsm) == 0 {
		return nil, fmt.Errorf("cpio: bootstrap ramdisk needs non-empty init (%d bytes) and nsm.ko (%d bytes)", len(init), len(nsm))
	}
	return []File{
		{Path: "dev", Mode: fs.ModeDir | 0o755},
		{Path: "init", Mode: 0o755, Data: init},
		{Path: "nsm.ko", Mode: 0o755, Data: nsm},
	}, nil
}

// Bootstrap builds the bootstrap ramdisk.
func Bootstrap(init, nsm []byte, opts Options) ([]byte, error) {
	files, err := BootstrapFiles(init, nsm)
	if err != nil {
		return nil, err
	}
	return Marshal(files, opts)
}

// App describes the application ramdisk: a root filesystem made from a
// static binary, plus the cmd and env files init reads.
type App struct {
	// Binary is the static executable.
	Binary []byte
	// Path is where the binary lives in the root filesystem, e.g.
	// "/enclaved" (the default) or "/usr/local/bin/server".
	Path string
	// Cmd is the argv init runs; empty means [Path]. Like a Dockerfile CMD
	// in exec form, one argument per line in the cmd file, so arguments
	// must not contain newlines.
	Cmd []string
	// Env is NAME=value lines for the env file; nil means DefaultEnv.
	Env []string
	// Files are extra regular files or symlinks for the root filesystem
	// (paths relative to it, e.g. "etc/ssl/certs/ca-certificates.crt");
	// missing parent directories are created with mode 0755.
	Files []File
}

// AppFiles lays out the application ramdisk as nitro-cli does: the root
// filesystem under rootfs/, rootfs/{dev,proc,run,sys,tmp,var}, and the
// files cmd and env. Entries are sorted by path, so parents come first.
func AppFiles(a App) ([]File, error) {
	if len(a.Binary) == 0 {
		return nil, fmt.Errorf("cpio: App.Binary is empty")
	}
	bin := a.Path
	if bin == "" {
		bin = "/enclaved"
	}
	if !strings.HasPrefix(bin, "/") || path.Clean(bin) != bin || bin == "/" {
		return nil, fmt.Errorf("cpio: App.Path %q is not a clean absolute file path", a.Path)
	}
	cmd := a.Cmd
	if len(cmd) == 0 {
		cmd = []string{bin}
	}
	env := a.Env
	if env == nil {
		env = DefaultEnv
	}
	lines := func(field string, v []string) ([]byte, error) {
		var b strings.Builder
		for i, s := range v {
			if strings.ContainsAny(s, "\n\x00") {
				return nil, fmt.Errorf("cpio: App.%s[%d] contains a newline or NUL", field, i)
			}
			b.WriteString(s)
			b.WriteByte('\n')
		}
		return []byte(b.String()), nil
	}
	cmdData, err := lines("Cmd", cmd)
	if err != nil {
		return nil, err
	}
	for i, e := range env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("cpio: App.Env[%d] %q is not NAME=value", i, e)
		}
	}
	envData, err := lines("Env", env)
	if err != nil {
		return nil, err
	}

	entries := map[string]File{
		"cmd":    {Path: "cmd", Mode: 0o644, Data: cmdData},
		"env":    {Path: "env", Mode: 0o644, Data: envData},
		"rootfs": {Path: "rootfs", Mode: fs.ModeDir | 0o755},
	}
	for _, d := range []string{"dev", "proc", "run", "sys", "tmp", "var"} {
		entries["rootfs/"+d] = File{Path: "rootfs/" + d, Mode: fs.ModeDir | 0o755}
	}
	add := func(f File) error {
		if err := checkPath(f.Path); err != nil {
			return err
		}
		if f.Mode.IsDir() {
			return fmt.Errorf("cpio: App file %q is a directory; list files only", f.Path)
		}
		p := "rootfs/" + f.Path
		if _, ok := entries[p]; ok {
			return fmt.Errorf("cpio: App file %q given twice or clashes with a directory", f.Path)
		}
		for d := path.Dir(p); d != "rootfs"; d = path.Dir(d) {
			if e, ok := entries[d]; ok && !e.Mode.IsDir() {
				return fmt.Errorf("cpio: %q is a file and a parent directory", d)
			}
			entries[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
		}
		f.Path = p
		entries[p] = f
		return nil
	}
	if err := add(File{Path: bin[1:], Mode: 0o755, Data: a.Binary}); err != nil {
		return nil, err
	}
	for _, f := range a.Files {
		if err := add(f); err != nil {
			return nil, err
		}
	}
	out := make([]File, 0, len(entries))
	for _, f := range entries {
		out = append(out, f)
	}
	slices.SortFunc(out, func(x, y File) int { return strings.Compare(x.Path, y.Path) })
	return out, nil
}

// Application builds the application ramdisk.
func Application(a App, opts Options) ([]byte, error) {
	files, err := AppFiles(a)
	if err != nil {
		return nil, err
	}
	return Marshal(files, opts)
}
