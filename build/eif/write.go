package eif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Signer produces the signature section of an image. Package build/eifsig
// provides one (COSE_Sign1 with ECDSA P-384 over PCR0, as nitro-cli signs).
type Signer interface {
	// SignPCR0 returns the encoded signature section for an image whose PCR0
	// is pcr0.
	SignPCR0(pcr0 PCR) ([]byte, error)
	// CertificateDER returns the DER of the signing certificate (for PCR8).
	CertificateDER() []byte
}

// Spec is everything an image is built from. Building the same Spec twice
// gives identical bytes (a Signer must be deterministic for that to hold when
// signing; ECDSA is randomised, so signed images differ in their signature
// section only, never in PCR0..PCR8).
type Spec struct {
	// Kernel is the kernel image (bzImage on x86_64, Image on arm64).
	Kernel []byte
	// Cmdline is the kernel command line; it must not contain NUL.
	Cmdline string
	// Ramdisks are the initramfs images in order: bootstrap first, then
	// the application. At least one is required.
	Ramdisks [][]byte
	// Metadata is the JSON metadata section (see Metadata.Marshal). It is
	// required: EIF v4 makes the section mandatory. It is not measured.
	Metadata []byte
	// Flags is FlagARM64 for aarch64 images, 0 for x86_64.
	Flags uint16
	// DefaultMemory in bytes; 0 means DefaultMemory.
	DefaultMemory uint64
	// DefaultCPUs; 0 means DefaultCPUs.
	DefaultCPUs uint64
	// Signer, if set, adds a signature section and PCR8.
	Signer Signer
}

// Validate reports whether the Spec can be built.
func (s *Spec) Validate() error {
	var errs []error
	if len(s.Kernel) == 0 {
		errs = append(errs, errors.New("eif: Spec.Kernel is empty"))
	}
	if i := bytes.IndexByte([]byte(s.Cmdline), 0); i >= 0 {
		errs = append(errs, fmt.Errorf("eif: Spec.Cmdline has a NUL byte at index %d", i))
	}
	if len(s.Ramdisks) == 0 {
		errs = append(errs, errors.New("eif: Spec.Ramdisks is empty; need at least the bootstrap ramdisk"))
	}
	if s.Metadata == nil {
		errs = append(errs, errors.New("eif: Spec.Metadata is nil; the metadata section is mandatory in EIF v4"))
	}
	// kernel + cmdline + metadata + ramdisks + signature ≤ MaxSections
	if n := 3 + len(s.Ramdisks) + 1; n > MaxSections {
		errs = append(errs, fmt.Errorf("eif: %d ramdisks need %d sections, limit %d", len(s.Ramdisks), n, MaxSections))
	}
	if s.Flags&^FlagARM64 != 0 {
		errs = append(errs, fmt.Errorf("eif: Spec.Flags 0x%04x has unknown bits", s.Flags))
	}
	return errors.Join(errs...)
}

// Build measures the sections, signs PCR0 if a Signer is set, and encodes the
// image. It returns the file bytes and the measurements.
func Build(s Spec) ([]byte, Measurements, error) {
	if err := s.Validate(); err != nil {
		return nil, Measurements{}, err
	}
	img := &Image{
		Flags:         s.Flags,
		DefaultMemory: s.DefaultMemory,
		DefaultCPUs:   s.DefaultCPUs,
		Kernel:        s.Kernel,
		Cmdline:       []byte(s.Cmdline),
		Metadata:      s.Metadata,
		Ramdisks:      s.Ramdisks,
	}
	if img.DefaultMemory == 0 {
		img.DefaultMemory = DefaultMemory
	}
	if img.DefaultCPUs == 0 {
		img.DefaultCPUs = DefaultCPUs
	}
	m := img.Measure()
	if s.Signer != nil {
		sig, err := s.Signer.SignPCR0(m.PCR0)
		if err != nil {
			return nil, Measurements{}, fmt.Errorf("eif: signing PCR0: %w", err)
		}
		if len(sig) == 0 || len(sig) > MaxSignatureSize {
			return nil, Measurements{}, fmt.Errorf("eif: signer returned a %d-byte signature section, want 1..%d", len(sig), MaxSignatureSize)
		}
		img.Signature = sig
		p8 := PCR8(s.Signer.CertificateDER())
		m.PCR8 = &p8
	}
	b, err := img.MarshalBinary()
	if err != nil {
		return nil, Measurements{}, err
	}
	return b, m, nil
}

type section struct {
	typ  SectionType
	data []byte
}

func (img *Image) sections() []section {
	s := []section{{SectionKernel, img.Kernel}, {SectionCmdline, img.Cmdline}}
	if img.Metadata != nil {
		s = append(s, section{SectionMetadata, img.Metadata})
	}
	for _, r := range img.Ramdisks {
		s = append(s, section{SectionRamdisk, r})
	}
	if img.Signature != nil {
		s = append(s, section{SectionSignature, img.Signature})
	}
	return s
}

// EncodedSize is the size of the file MarshalBinary produces.
func (img *Image) EncodedSize() int64 {
	n := int64(HeaderSize)
	for _, s := range img.sections() {
		n += SectionHeaderSize + int64(len(s.data))
	}
	return n
}

// header encodes the file header for the given sections with the given CRC.
func (img *Image) header(secs []section, crc uint32) ([HeaderSize]byte, error) {
	var h [HeaderSize]byte
	if len(secs) > MaxSections {
		return h, fmt.Errorf("eif: %d sections, limit %d", len(secs), MaxSections)
	}
	if len(img.Ramdisks) == 0 || len(img.Kernel) == 0 || img.Metadata == nil {
		return h, errors.New("eif: an image needs a kernel, a metadata section and at least one ramdisk")
	}
	if i := bytes.IndexByte(img.Cmdline, 0); i >= 0 {
		return h, fmt.Errorf("eif: cmdline has a NUL byte at index %d", i)
	}
	if len(img.Signature) > MaxSignatureSize {
		return h, fmt.Errorf("eif: signature section of %d bytes, limit %d", len(img.Signature), MaxSignatureSize)
	}
	be := binary.BigEndian
	copy(h[:], Magic)
	be.PutUint16(h[offVersion:], Version)
	be.PutUint16(h[offFlags:], img.Flags)
	be.PutUint64(h[offDefaultMem:], img.DefaultMemory)
	be.PutUint64(h[offDefaultCPUs:], img.DefaultCPUs)
	be.PutUint16(h[offNumSections:], uint16(len(secs)))
	off := uint64(HeaderSize)
	for i, s := range secs {
		be.PutUint64(h[offOffsets+8*i:], off)
		be.PutUint64(h[offSizes+8*i:], uint64(len(s.data)))
		off += SectionHeaderSize + uint64(len(s.data))
	}
	be.PutUint32(h[crcOffset:], crc)
	return h, nil
}

func sectionHeader(s section) [SectionHeaderSize]byte {
	var h [SectionHeaderSize]byte
	binary.BigEndian.PutUint16(h[0:], uint16(s.typ))
	binary.BigEndian.PutUint64(h[4:], uint64(len(s.data)))
	return h
}

// WriteTo writes the encoded image to w, computing the CRC first (the
// stored CRC field is ignored). Sections are written in nitro-cli's order.
func (img *Image) WriteTo(w io.Writer) (int64, error) {
	secs := img.sections()
	h, err := img.header(secs, 0)
	if err != nil {
		return 0, err
	}
	crc := crc32.Update(0, crc32.IEEETable, h[:crcOffset])
	for _, s := range secs {
		sh := sectionHeader(s)
		crc = crc32.Update(crc, crc32.IEEETable, sh[:])
		crc = crc32.Update(crc, crc32.IEEETable, s.data)
	}
	binary.BigEndian.PutUint32(h[crcOffset:], crc)
	n, err := w.Write(h[:])
	total := int64(n)
	if err != nil {
		return total, err
	}
	for _, s := range secs {
		sh := sectionHeader(s)
		n, err = w.Write(sh[:])
		total += int64(n)
		if err != nil {
			return total, err
		}
		n, err = w.Write(s.data)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// MarshalBinary encodes the image; see WriteTo.
func (img *Image) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(img.EncodedSize()))
	if _, err := img.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
