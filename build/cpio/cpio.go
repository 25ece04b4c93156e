package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
	// MaxNameSize bounds a name (NUL included), as PATH_MAX does.
	MaxNameSize = 4096
	// MaxFileSize bounds one entry's data; newc stores sizes in 32 bits.
	MaxFileSize = 1<<32 - 1

	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeType    = 0o170000
)

// Sentinel errors of Read.
var (
	ErrTruncated = errors.New("cpio: truncated")
	ErrMalformed = errors.New("cpio: malformed")
)

// File is one archive entry.
type File struct {
	// Path is relative and clean ("rootfs/usr/bin/app"), never "/x" or "..".
	Path string
	// Mode holds fs.ModeDir or fs.ModeSymlink (or neither, for a regular
	// file) and the permission bits; other type bits are not supported.
	Mode fs.FileMode
	// Data is a regular file's content or a symlink's target.
	Data []byte
}

// MaxMTime is the largest Options.MTime: newc stores it in 32 bits.
const MaxMTime = 1<<32 - 1

// ErrConfig is wrapped by every configuration error of the package: those
// of Options.Validate, and so of Write, Marshal, Bootstrap and Application.
var ErrConfig = errors.New("cpio: bad configuration")

// Options control the fixed metadata of every entry. The zero value is
// valid.
type Options struct {
	// MTime is every entry's modification time in Unix seconds (use
	// SOURCE_DATE_EPOCH), 0..MaxMTime; 0 is the Unix epoch.
	MTime int64
}

// Validate reports a field whose value is not accepted, naming it, its
// value and what is accepted; the error wraps ErrConfig.
func (o Options) Validate() error {
	if o.MTime < 0 || o.MTime > MaxMTime {
		return fmt.Errorf("%w: Options.MTime is %d, outside 0..%d (newc stores it in 32 bits)", ErrConfig, o.MTime, int64(MaxMTime))
	}
	return nil
}

func checkPath(p string) error {
	if p == "" || p == "." || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("cpio: path %q is not a clean relative path", p)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("cpio: path %q contains NUL", p)
	}
	if len(p)+1 > MaxNameSize {
		return fmt.Errorf("cpio: path of %d bytes, limit %d", len(p), MaxNameSize-1)
	}
	return nil
}

func cpioMode(m fs.FileMode) (uint32, error) {
	perm := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	switch m.Type() {
	case fs.ModeDir:
		return modeDir | perm, nil
	case fs.ModeSymlink:
		return modeSymlink | perm, nil
	case 0:
		return modeRegular | perm, nil
	}
	return 0, fmt.Errorf("cpio: unsupported file type %v", m.Type())
}

// Validate checks paths, types and sizes, that no path repeats, and that
// every parent directory appears before its children.
func Validate(files []File) error {
	seen := make(map[string]bool, len(files))
	dirs := make(map[string]bool)
	for i, f := range files {
		if err := checkPath(f.Path); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if seen[f.Path] {
			return fmt.Errorf("cpio: entry %d: duplicate path %q", i, f.Path)
		}
		seen[f.Path] = true
		if _, err := cpioMode(f.Mode); err != nil {
			return fmt.Errorf("entry %d (%s): %w", i, f.Path, err)
		}
		if f.Mode.IsDir() {
			if len(f.Data) != 0 {
				return fmt.Errorf("cpio: entry %d: directory %q has data", i, f.Path)
			}
			dirs[f.Path] = true
		}
		if int64(len(f.Data)) > MaxFileSize {
			return fmt.Errorf("cpio: entry %d (%s): %d bytes, limit %d", i, f.Path, len(f.Data), int64(MaxFileSize))
		}
		if dir := path.Dir(f.Path); dir != "." && !dirs[dir] {
			return fmt.Errorf("cpio: entry %d: %q comes before (or without) its directory %q", i, f.Path, dir)
		}
	}
	return nil
}

func pad4(n int) int { return (4 - n%4) % 4 }

var zeros [4]byte

func writeEntry(w io.Writer, ino, mode, nlink uint32, mtime int64, name string, data []byte) error {
	var h [headerSize]byte
	copy(h[:], magic)
	fields := [13]uint32{ino, mode, 0, 0, nlink, uint32(mtime), uint32(len(data)), 0, 0, 0, 0, uint32(len(name) + 1), 0}
	for i, v := range fields {
		hx := strconv.FormatUint(uint64(v), 16)
		copy(h[6+8*i:], strings.Repeat("0", 8-len(hx)))
		copy(h[6+8*i+8-len(hx):], strings.ToUpper(hx))
	}
	nameLen := len(name) + 1
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	if _, err := io.WriteString(w, name); err != nil {
		return err
	}
	if _, err := w.Write(append([]byte{0}, zeros[:pad4(headerSize+nameLen)]...)); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(zeros[:pad4(len(data))])
	return err
}

// Write writes files, in order, as a newc archive with a trailer.
func Write(w io.Writer, files []File, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if err := Validate(files); err != nil {
		return err
	}
	for i, f := range files {
		mode, _ := cpioMode(f.Mode)
		nlink := uint32(1)
		if f.Mode.IsDir() {
			nlink = 2
		}
		if err := writeEntry(w, uint32(i+1), mode, nlink, opts.MTime, f.Path, f.Data); err != nil {
			return err
		}
	}
	return writeEntry(w, 0, 0, 1, 0, trailer, nil)
}

// Marshal returns the archive Write produces.
func Marshal(files []File, opts Options) ([]byte, error) {
	var b bytes.Buffer
	if err := Write(&b, files, opts); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Header is the metadata Read returns beside each file.
type Header struct {
	Ino, UID, GID, NLink uint32
	MTime                int64
}

// Read parses a newc archive strictly: hex fields, padding that is zero,
// sizes within the input, names clean and NUL-terminated, a trailer, and
// nothing after it but zero padding. File data aliases b.
func Read(b []byte) ([]File, []Header, error) {
	var files []File
	var hdrs []Header
	off := 0
	for {
		if len(b)-off < headerSize {
			return nil, nil, fmt.Errorf("%w: entry header at offset %d needs %d bytes, %d left", ErrTruncated, off, headerSize, len(b)-off)
		}
		h := b[off : off+headerSize]
		if string(h[:6]) != magic {
			return nil, nil, fmt.Errorf("%w: magic %q at offset %d, want %q", ErrMalformed, h[:6], off, magic)
		}
		var fv [13]uint32
		for i := range fv {
			field := h[6+8*i : 14+8*i]
			v, err := strconv.ParseUint(string(field), 16, 32)
			if err != nil || bytes.ContainsAny(field, "+-xX") {
				return nil, nil, fmt.Errorf("%w: header field %d at offset %d is %q, not 8 hex digits", ErrMalformed, i, off+6+8*i, field)
			}
			fv[i] = uint32(v)
		}
		ino, mode, uid, gid, nlink, mtime, size, nameSize := fv[0], fv[1], fv[2], fv[3], fv[4], fv[5], fv[6], fv[11]
		if nameSize < 2 || nameSize > MaxNameSize {
			return nil, nil, fmt.Errorf("%w: namesize %d at offset %d, want 2..%d", ErrMalformed, nameSize, off+6+8*11, MaxNameSize)
		}
		if fv[13-1] != 0 {
			return nil, nil, fmt.Errorf("%w: check field %d at offset %d, want 0", ErrMalformed, fv[12], off+6+8*12)
		}
		off += headerSize
		nameEnd := off + int(nameSize) + pad4(headerSize+int(nameSize))
		if nameEnd > len(b) {
			return nil, nil, fmt.Errorf("%w: name of %d bytes at offset %d, %d left", ErrTruncated, nameSize, off, len(b)-off)
		}
		name := b[off : off+int(nameSize)]
		if name[len(name)-1] != 0 || bytes.IndexByte(name[:len(name)-1], 0) >= 0 {
			return nil, nil, fmt.Errorf("%w: name at offset %d is not one NUL-terminated string", ErrMalformed, off)
		}
		if !allZero(b[off+int(nameSize) : nameEnd]) {
			return nil, nil, fmt.Errorf("%w: non-zero name padding at offset %d", ErrMalformed, off+int(nameSize))
		}
		off = nameEnd
		p := string(name[:len(name)-1])
		if p == trailer {
			if size != 0 {
				return nil, nil, fmt.Errorf("%w: trailer with %d bytes of data", ErrMalformed, size)
			}
			if !allZero(b[off:]) {
				return nil, nil, fmt.Errorf("%w: %d bytes after the trailer at offset %d", ErrMalformed, len(b)-off, off)
			}
			return files, hdrs, nil
		}
		if uint64(size) > uint64(len(b)-off) {
			return nil, nil, fmt.Errorf("%w: %q claims %d bytes at offset %d, %d left", ErrTruncated, p, size, off, len(b)-off)
		}
		dataEnd := off + int(size) + pad4(int(size))
		if dataEnd > len(b) {
			return nil, nil, fmt.Errorf("%w: padding after %q at offset %d", ErrTruncated, p, off+int(size))
		}
		if !allZero(b[off+int(size) : dataEnd]) {
			return nil, nil, fmt.Errorf("%w: non-zero data padding at offset %d", ErrMalformed, off+int(size))
		}
		if err := checkPath(p); err != nil {
			return nil, nil, fmt.Errorf("%w: entry at offset %d: %v", ErrMalformed, off, err)
		}
		var fm fs.FileMode
		switch mode & modeType {
		case modeDir:
			fm = fs.ModeDir
		case modeSymlink:
			fm = fs.ModeSymlink
		case modeRegular:
		default:
			return nil, nil, fmt.Errorf("%w: %q has unsupported mode %o", ErrMalformed, p, mode)
		}
		fm |= fs.FileMode(mode & 0o777)
		if mode&0o4000 != 0 {
			fm |= fs.ModeSetuid
		}
		if mode&0o2000 != 0 {
			fm |= fs.ModeSetgid
		}
		if mode&0o1000 != 0 {
			fm |= fs.ModeSticky
		}
		files = append(files, File{Path: p, Mode: fm, Data: b[off : off+int(size) : off+int(size)]})
		hdrs = append(hdrs, Header{Ino: ino, UID: uid, GID: gid, NLink: nlink, MTime: int64(mtime)})
		off = dataEnd
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
