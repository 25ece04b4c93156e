package eif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// Format constants, from aws/aws-nitro-enclaves-image-format src/defs/mod.rs.
const (
	// Magic is the first four bytes of every EIF.
	Magic = ".eif"
	// Version is the only format version this package reads and writes.
	Version = 4
	// HeaderSize is the size of the fixed file header.
	HeaderSize = 548
	// SectionHeaderSize is the size of the header in front of each section.
	SectionHeaderSize = 12
	// MaxSections is the capacity of the header's offset and size tables.
	MaxSections = 32
	// FlagARM64 is the header flag set for aarch64 images.
	FlagARM64 = 0x1
	// MaxSignatureSize is the largest signature section the format allows
	// (SIGNATURE_MAX_SIZE in the aws-nitro-enclaves-image-format README,
	// "EifSectionSignature").
	MaxSignatureSize = 32768

	// DefaultMemory and DefaultCPUs are what nitro-cli's builder records.
	DefaultMemory = 1 << 30
	DefaultCPUs   = 2

	crcOffset = HeaderSize - 4 // eif_crc32 is the header's last field
)

// Header field offsets.
const (
	offVersion     = 4
	offFlags       = 6
	offDefaultMem  = 8
	offDefaultCPUs = 16
	offReserved    = 24
	offNumSections = 26
	offOffsets     = 28
	offSizes       = offOffsets + 8*MaxSections // 284
	offUnused      = offSizes + 8*MaxSections   // 540
)

// SectionType identifies a section.
type SectionType uint16

// Section types (EifSectionType).
const (
	SectionInvalid   SectionType = 0
	SectionKernel    SectionType = 1
	SectionCmdline   SectionType = 2
	SectionRamdisk   SectionType = 3
	SectionSignature SectionType = 4
	SectionMetadata  SectionType = 5
)

func (t SectionType) String() string {
	switch t {
	case SectionKernel:
		return "kernel"
	case SectionCmdline:
		return "cmdline"
	case SectionRamdisk:
		return "ramdisk"
	case SectionSignature:
		return "signature"
	case SectionMetadata:
		return "metadata"
	}
	return fmt.Sprintf("invalid(%d)", uint16(t))
}

// Sentinel errors. Every error returned by [Parse] wraps one of them (through
// a *FormatError that names the field and offset).
var (
	ErrTruncated = errors.New("eif: truncated")
	ErrMagic     = errors.New("eif: bad magic")
	ErrVersion   = errors.New("eif: unsupported version")
	ErrCRC       = errors.New("eif: CRC-32 mismatch")
	ErrMalformed = errors.New("eif: malformed")
	ErrTrailing  = errors.New("eif: trailing bytes")
)

// FormatError describes where a file departs from the format.
type FormatError struct {
	Offset int64  // byte offset of the offending field
	Field  string // e.g. "header.num_sections", "section[3].size"
	Detail string // the value found and the limit it broke
	Err    error  // one of the sentinels
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d: %s", e.Err, e.Field, e.Offset, e.Detail)
}

func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(sentinel error, off int64, field, format string, args ...any) error {
	return &FormatError{Offset: off, Field: field, Detail: fmt.Sprintf(format, args...), Err: sentinel}
}

// Image is a parsed EIF. Byte slices returned by [Parse] alias its input.
type Image struct {
	Flags         uint16 // FlagARM64 or 0
	DefaultMemory uint64 // bytes
	DefaultCPUs   uint64
	Kernel        []byte
	Cmdline       []byte // without a terminating NUL
	Metadata      []byte // JSON (see Metadata); mandatory in EIF v4
	Ramdisks      [][]byte
	Signature     []byte // raw CBOR signature section; nil if unsigned
	CRC           uint32 // the CRC stored in the header
}

// Signed reports whether the image carries a signature section.
func (img *Image) Signed() bool { return img.Signature != nil }

// CRC computes the CRC-32 (IEEE) of an encoded EIF as nitro-cli does: over
// every byte of the file except the header's eif_crc32 field (bytes 544..547).
// It fails only if b is shorter than a header.
func CRC(b []byte) (uint32, error) {
	if len(b) < HeaderSize {
		return 0, formatErr(ErrTruncated, int64(len(b)), "header", "file is %d bytes, header needs %d", len(b), HeaderSize)
	}
	c := crc32.Update(0, crc32.IEEETable, b[:crcOffset])
	return crc32.Update(c, crc32.IEEETable, b[HeaderSize:]), nil
}

// StoredCRC returns the CRC recorded in the header of b.
func StoredCRC(b []byte) (uint32, error) {
	if len(b) < HeaderSize {
		return 0, formatErr(ErrTruncated, int64(len(b)), "header", "file is %d bytes, header needs %d", len(b), HeaderSize)
	}
	return binary.BigEndian.Uint32(b[crcOffset:]), nil
}

// ParseOptions relaxes [ParseWithOptions]. The zero value is valid and
// relaxes nothing (it is what Parse uses); no value is invalid, so there is
// no Validate.
type ParseOptions struct {
	// IgnoreCRC parses an image whose CRC does not match, so that a tool can
	// still show what the file claims (nitro-cli describe-eif does). The
	// structure is checked as strictly as ever. false checks the CRC.
	IgnoreCRC bool
}

// Parse decodes an EIF strictly, CRC included.
func Parse(b []byte) (*Image, error) { return ParseWithOptions(b, ParseOptions{}) }

// ParseWithOptions decodes an EIF; see [Parse].
func ParseWithOptions(b []byte, opts ParseOptions) (*Image, error) {
	if len(b) < HeaderSize {
		return nil, formatErr(ErrTruncated, int64(len(b)), "header", "file is %d bytes, header needs %d", len(b), HeaderSize)
	}
	be := binary.BigEndian
	if string(b[:4]) != Magic {
		return nil, formatErr(ErrMagic, 0, "header.magic", "got %q, want %q", b[:4], Magic)
	}
	if v := be.Uint16(b[offVersion:]); v != Version {
		return nil, formatErr(ErrVersion, offVersion, "header.version", "got %d, want %d", v, Version)
	}
	img := &Image{
		Flags:         be.Uint16(b[offFlags:]),
		DefaultMemory: be.Uint64(b[offDefaultMem:]),
		DefaultCPUs:   be.Uint64(b[offDefaultCPUs:]),
		CRC:           be.Uint32(b[crcOffset:]),
	}
	if img.Flags&^FlagARM64 != 0 {
		return nil, formatErr(ErrMalformed, offFlags, "header.flags", "unknown bits 0x%04x (only 0x%04x defined)", img.Flags&^FlagARM64, FlagARM64)
	}
	if r := be.Uint16(b[offReserved:]); r != 0 {
		return nil, formatErr(ErrMalformed, offReserved, "header.reserved", "got %d, want 0", r)
	}
	if u := be.Uint32(b[offUnused:]); u != 0 {
		return nil, formatErr(ErrMalformed, offUnused, "header.unused", "got %d, want 0", u)
	}
	n := int(be.Uint16(b[offNumSections:]))
	if n > MaxSections {
		return nil, formatErr(ErrMalformed, offNumSections, "header.num_sections", "got %d, limit %d", n, MaxSections)
	}
	for i := n; i < MaxSections; i++ {
		if o := be.Uint64(b[offOffsets+8*i:]); o != 0 {
			return nil, formatErr(ErrMalformed, int64(offOffsets+8*i), fmt.Sprintf("header.section_offsets[%d]", i), "unused entry is %d, want 0 (num_sections %d)", o, n)
		}
		if s := be.Uint64(b[offSizes+8*i:]); s != 0 {
			return nil, formatErr(ErrMalformed, int64(offSizes+8*i), fmt.Sprintf("header.section_sizes[%d]", i), "unused entry is %d, want 0 (num_sections %d)", s, n)
		}
	}

	// The stage each section type may appear in: kernel, cmdline, metadata?,
	// ramdisk+, signature? — the order nitro-cli's EifBuilder writes.
	const (
		stKernel = iota
		stCmdline
		stMetadata
		stRamdisk
		stDone
	)
	stage := stKernel
	pos := uint64(HeaderSize)
	size := uint64(len(b))
	for i := 0; i < n; i++ {
		field := fmt.Sprintf("section[%d]", i)
		if want := be.Uint64(b[offOffsets+8*i:]); want != pos {
			return nil, formatErr(ErrMalformed, int64(offOffsets+8*i), fmt.Sprintf("header.section_offsets[%d]", i), "got %d, but the section starts at %d", want, pos)
		}
		if size-pos < SectionHeaderSize {
			return nil, formatErr(ErrTruncated, int64(pos), field+".header", "%d bytes left, section header needs %d", size-pos, SectionHeaderSize)
		}
		typ := SectionType(be.Uint16(b[pos:]))
		flags := be.Uint16(b[pos+2:])
		ss := be.Uint64(b[pos+4:])
		if flags != 0 {
			return nil, formatErr(ErrMalformed, int64(pos+2), field+".flags", "got 0x%04x, want 0", flags)
		}
		if hs := be.Uint64(b[offSizes+8*i:]); hs != ss {
			return nil, formatErr(ErrMalformed, int64(offSizes+8*i), fmt.Sprintf("header.section_sizes[%d]", i), "got %d, section header says %d", hs, ss)
		}
		pos += SectionHeaderSize
		if ss > size-pos {
			return nil, formatErr(ErrTruncated, int64(pos-8), field+".size", "%s section claims %d bytes, %d left", typ, ss, size-pos)
		}
		data := b[pos : pos+ss : pos+ss]
		switch {
		case typ == SectionKernel && stage == stKernel:
			if ss == 0 {
				return nil, formatErr(ErrMalformed, int64(pos-8), field+".size", "kernel section is empty")
			}
			img.Kernel, stage = data, stCmdline
		case typ == SectionCmdline && stage == stCmdline:
			// nitro-cli builds the cmdline with CString::new, which refuses
			// NUL; the kernel would cut the command line there.
			if i := bytes.IndexByte(data, 0); i >= 0 {
				return nil, formatErr(ErrMalformed, int64(pos)+int64(i), field+".data", "NUL byte at index %d of the cmdline", i)
			}
			img.Cmdline, stage = data, stMetadata
		case typ == SectionMetadata && stage == stMetadata:
			img.Metadata, stage = data, stRamdisk
		case typ == SectionRamdisk && (stage == stMetadata || stage == stRamdisk):
			img.Ramdisks, stage = append(img.Ramdisks, data), stRamdisk
		case typ == SectionSignature && stage == stRamdisk:
			if ss > MaxSignatureSize {
				return nil, formatErr(ErrMalformed, int64(pos-8), field+".size", "signature section is %d bytes, limit %d", ss, MaxSignatureSize)
			}
			img.Signature, stage = data, stDone
		default:
			return nil, formatErr(ErrMalformed, int64(pos-SectionHeaderSize), field+".type",
				"%s section not allowed here (order: kernel, cmdline, metadata, ramdisk..., signature)", typ)
		}
		pos += ss
	}
	if img.Metadata == nil {
		// Mandatory since version 4 (aws-nitro-enclaves-image-format
		// README, "EIF format version history"): the Nitro stack checks
		// that it is present.
		return nil, formatErr(ErrMalformed, offNumSections, "header.num_sections",
			"%d sections without a metadata section (mandatory in EIF v4)", n)
	}
	if len(img.Ramdisks) == 0 {
		return nil, formatErr(ErrMalformed, offNumSections, "header.num_sections",
			"%d sections without kernel, cmdline and at least one ramdisk", n)
	}
	if pos != size {
		return nil, formatErr(ErrTrailing, int64(pos), "file", "%d bytes after the last section", size-pos)
	}
	if !opts.IgnoreCRC {
		got, _ := CRC(b)
		if got != img.CRC {
			return nil, formatErr(ErrCRC, crcOffset, "header.eif_crc32", "stored 0x%08x, computed 0x%08x", img.CRC, got)
		}
	}
	return img, nil
}

// ReadFile reads and parses the EIF at path; errors name the file.
func ReadFile(path string, opts ParseOptions) (*Image, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	img, err := ParseWithOptions(b, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, b, nil
}
