package cpio

import (
	"bytes"
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestWriteKnownBytes(t *testing.T) {
	b, err := Marshal([]File{{Path: "a", Mode: 0o644, Data: []byte("hi")}}, Options{MTime: 0x10})
	if err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000081A4" + "00000000" + "00000000" + "00000001" + "00000010" +
		"00000002" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
		"a\x00" + // 110 + 2 = 112, already aligned
		"hi\x00\x00" +
		"070701" + "00000000" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000B" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00" // 110 + 11 padded to 124
	if string(b) != want {
		t.Fatalf("got\n%q\nwant\n%q", b, want)
	}
}

func TestRoundTrip(t *testing.T) {
	files := []File{
		{Path: "dev", Mode: fs.ModeDir | 0o755},
		{Path: "dev/x", Mode: 0o600, Data: []byte("12345")},
		{Path: "link", Mode: fs.ModeSymlink | 0o777, Data: []byte("dev/x")},
		{Path: "suid", Mode: fs.ModeSetuid | 0o755, Data: []byte{}},
	}
	b, err := Marshal(files, Options{MTime: 1700000000})
	if err != nil {
		t.Fatal(err)
	}
	got, hdrs, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Fatalf("%d files", len(got))
	}
	for i := range files {
		if got[i].Path != files[i].Path || got[i].Mode != files[i].Mode || !bytes.Equal(got[i].Data, files[i].Data) {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], files[i])
		}
		h := hdrs[i]
		if h.Ino != uint32(i+1) || h.UID != 0 || h.GID != 0 || h.MTime != 1700000000 {
			t.Errorf("entry %d header %+v", i, h)
		}
	}
	if hdrs[0].NLink != 2 || hdrs[1].NLink != 1 {
		t.Error("nlink")
	}
	if len(b)%4 != 0 {
		t.Error("archive not 4-aligned")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		files []File
		want  string
	}{
		{"absolute", []File{{Path: "/a"}}, "clean relative"},
		{"dotdot", []File{{Path: "../a"}}, "clean relative"},
		{"unclean", []File{{Path: "a//b"}}, "clean relative"},
		{"empty", []File{{Path: ""}}, "clean relative"},
		{"dup", []File{{Path: "a"}, {Path: "a"}}, "duplicate"},
		{"no parent", []File{{Path: "a/b"}}, "before (or without)"},
		{"child first", []File{{Path: "a/b"}, {Path: "a", Mode: fs.ModeDir}}, "before (or without)"},
		{"dir data", []File{{Path: "a", Mode: fs.ModeDir, Data: []byte{1}}}, "has data"},
		{"device", []File{{Path: "a", Mode: fs.ModeDevice}}, "unsupported file type"},
		{"long", []File{{Path: strings.Repeat("a", MaxNameSize)}}, "limit 4095"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := Marshal(nil, Options{MTime: -1}); !errors.Is(err, ErrConfig) {
		t.Errorf("negative mtime: %v, want ErrConfig", err)
	}
	if err := (Options{MTime: MaxMTime + 1}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("mtime beyond 32 bits: %v, want ErrConfig", err)
	}
}

func TestReadRejects(t *testing.T) {
	good, err := Marshal([]File{{Path: "abc", Mode: 0o644, Data: []byte("hello")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(good) {
		if _, _, err := Read(good[:n]); err == nil {
			t.Fatalf("truncated to %d of %d: accepted", n, len(good))
		}
	}
	set := func(off int, s string) []byte { b := bytes.Clone(good); copy(b[off:], s); return b }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"magic", set(0, "070707"), ErrMalformed},
		{"hex", set(6, "0000000G"), ErrMalformed},
		{"namesize 0", set(6+8*11, "00000000"), ErrMalformed},
		{"namesize huge", set(6+8*11, "FFFFFFFF"), ErrMalformed},
		{"filesize huge", set(6+8*6, "FFFFFFFF"), ErrTruncated},
		{"check", set(6+8*12, "00000001"), ErrMalformed},
		{"name padding", set(110+4, "x"), ErrMalformed},
		{"data padding", set(116+5, "x"), ErrMalformed},
		{"trailing", append(bytes.Clone(good), 1), ErrMalformed},
		{"bad path", set(110, "/bc"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Read(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, _, err := Read(append(bytes.Clone(good), 0, 0, 0, 0)); err != nil {
		t.Fatalf("zero padding after trailer rejected: %v", err)
	}
}

func TestBootstrap(t *testing.T) {
	b, err := Bootstrap([]byte("INIT"), []byte("NSM"), Options{MTime: 1})
	if err != nil {
		t.Fatal(err)
	}
	files, _, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Mode.String()+" "+f.Path+" "+string(f.Data))
	}
	want := []string{"drwxr-xr-x dev ", "-rwxr-xr-x init INIT", "-rwxr-xr-x nsm.ko NSM"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
	if _, err := Bootstrap(nil, []byte("x"), Options{}); err == nil {
		t.Fatal("empty init accepted")
	}
}

func TestApplication(t *testing.T) {
	a := App{
		Binary: []byte("\x7fELF"),
		Path:   "/usr/local/bin/enclaved",
		Cmd:    []string{"/usr/local/bin/enclaved", "-listen", "vsock://ANY:5000"},
		Env:    []string{"A=1", "B=two words"},
		Files:  []File{{Path: "etc/ssl/certs/ca.crt", Mode: 0o644, Data: []byte("CA")}},
	}
	b1, err := Application(a, Options{MTime: 42})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Application(a, Options{MTime: 42})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatal("not deterministic")
	}
	files, _, err := Read(b1)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	byPath := map[string]File{}
	for _, f := range files {
		paths = append(paths, f.Path)
		byPath[f.Path] = f
	}
	want := "cmd env rootfs rootfs/dev rootfs/etc rootfs/etc/ssl rootfs/etc/ssl/certs rootfs/etc/ssl/certs/ca.crt " +
		"rootfs/proc rootfs/run rootfs/sys rootfs/tmp rootfs/usr rootfs/usr/local rootfs/usr/local/bin " +
		"rootfs/usr/local/bin/enclaved rootfs/var"
	if strings.Join(paths, " ") != want {
		t.Fatalf("paths\n got %s\nwant %s", strings.Join(paths, " "), want)
	}
	if string(byPath["cmd"].Data) != "/usr/local/bin/enclaved\n-listen\nvsock://ANY:5000\n" {
		t.Errorf("cmd %q", byPath["cmd"].Data)
	}
	if string(byPath["env"].Data) != "A=1\nB=two words\n" {
		t.Errorf("env %q", byPath["env"].Data)
	}
	if byPath["rootfs/usr/local/bin/enclaved"].Mode != 0o755 {
		t.Error("binary not executable")
	}
	// Defaults.
	d, err := AppFiles(App{Binary: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range d {
		if f.Path == "cmd" && string(f.Data) != "/enclaved\n" {
			t.Errorf("default cmd %q", f.Data)
		}
		if f.Path == "env" && !strings.HasPrefix(string(f.Data), "PATH=") {
			t.Errorf("default env %q", f.Data)
		}
	}
}

func TestApplicationErrors(t *testing.T) {
	tests := []struct {
		name string
		app  App
		want string
	}{
		{"no binary", App{}, "Binary is empty"},
		{"relative path", App{Binary: []byte("x"), Path: "enclaved"}, "clean absolute"},
		{"newline in cmd", App{Binary: []byte("x"), Cmd: []string{"a\nb"}}, "Cmd[0]"},
		{"bad env", App{Binary: []byte("x"), Env: []string{"NOEQUALS"}}, "NAME=value"},
		{"clash", App{Binary: []byte("x"), Files: []File{{Path: "enclaved"}}}, "given twice"},
		{"file as dir", App{Binary: []byte("x"), Files: []File{{Path: "enclaved/x"}}}, "file and a parent"},
		{"dir entry", App{Binary: []byte("x"), Files: []File{{Path: "etc", Mode: fs.ModeDir}}}, "directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := AppFiles(tt.app)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}
