package eif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The golden files in testdata were written by testdata/gen_golden.py, an
// encoder written from the published format description
// (aws/aws-nitro-enclaves-image-format README.md, "Enclave Image File (EIF)
// Specification") with Python's struct, zlib.crc32 and hashlib; it shares
// nothing with this package. The PCRs below are what that script printed.
type golden struct {
	file       string
	spec       Spec
	crc        uint32
	pcr0, pcr1 string
	pcr2, pcr8 string
}

func goldens() []golden {
	k, c, md := []byte("KERNEL"), "console=ttyS0", []byte(`{"ImageName":"golden"}`)
	return []golden{{
		file: "golden_v4.eif",
		spec: Spec{Kernel: k, Cmdline: c, Metadata: md, Ramdisks: [][]byte{[]byte("boot"), []byte("app1"), []byte("app22")}},
		crc:  0x77c3e0a7,
		pcr0: "0c15e04f2cb59f3c581c64238dfb64507547a0992c56061d5dc589e27b86170ba8427141285cdd321fe212f3966b2a5b",
		pcr1: "9237e66416d307a2147622f59fd28d93768fafa9fd8c27b2514422651c293548f1e6471f394a90f876113e1ec7f088b0",
		pcr2: "ce5c8a7ca2a12c05467b6b2d04ef02305f0b7a26178d3b621e730309c5584b78e382c2498f14b0dc8af03fe8d4eb49cb",
	}, {
		file: "golden_v4_signed_arm64.eif",
		spec: Spec{Kernel: k, Cmdline: c, Metadata: md, Ramdisks: [][]byte{[]byte("boot")},
			Flags: FlagARM64, DefaultMemory: 512 << 20, DefaultCPUs: 4,
			Signer: fixedSigner{sig: []byte("SIGNATURE"), cert: []byte("CERT-DER")}},
		crc:  0xe64d70ba,
		pcr0: "9237e66416d307a2147622f59fd28d93768fafa9fd8c27b2514422651c293548f1e6471f394a90f876113e1ec7f088b0",
		pcr1: "9237e66416d307a2147622f59fd28d93768fafa9fd8c27b2514422651c293548f1e6471f394a90f876113e1ec7f088b0",
		pcr2: "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a",
		pcr8: "b384b9846f233bf180887a47fe30127b1ca1c37ab4d0656e375a2e25a8a1cfdcef909666eea30c64c0ff1411536bbc87",
	}}
}

// fixedSigner returns a fixed signature section, so the golden bytes are stable.
type fixedSigner struct{ sig, cert []byte }

func (f fixedSigner) SignPCR0(PCR) ([]byte, error) { return f.sig, nil }
func (f fixedSigner) CertificateDER() []byte       { return f.cert }

func TestGoldenIndependentEncoder(t *testing.T) {
	// The bitwise CRC of eif_test.go is the standard CRC-32/ISO-HDLC
	// (check value of "123456789", Rocksoft catalogue).
	if got := crc32IEEE([]byte("123456789")); got != 0xcbf43926 {
		t.Fatalf("crc32IEEE check value %08x", got)
	}
	for _, g := range goldens() {
		t.Run(g.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", g.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint32(want[544:]); got != g.crc {
				t.Fatalf("testdata stored CRC %08x, generator printed %08x", got, g.crc)
			}
			b, m, err := Build(g.spec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				for i := range min(len(b), len(want)) {
					if b[i] != want[i] {
						t.Fatalf("Build differs from the independent encoder at byte %d (len %d vs %d)", i, len(b), len(want))
					}
				}
				t.Fatalf("Build is %d bytes, the independent encoder %d", len(b), len(want))
			}
			img, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := CRC(want); c != g.crc {
				t.Errorf("CRC %08x, want %08x", c, g.crc)
			}
			for _, mm := range []Measurements{m, img.Measure()} {
				if mm.PCR0.String() != g.pcr0 || mm.PCR1.String() != g.pcr1 || mm.PCR2.String() != g.pcr2 {
					t.Errorf("PCRs\n%s\n%s\n%s\nwant\n%s\n%s\n%s", mm.PCR0, mm.PCR1, mm.PCR2, g.pcr0, g.pcr1, g.pcr2)
				}
			}
			if g.pcr8 != "" && (m.PCR8 == nil || m.PCR8.String() != g.pcr8) {
				t.Errorf("PCR8 %v, want %s", m.PCR8, g.pcr8)
			}
			if img.Flags != g.spec.Flags {
				t.Errorf("flags %d", img.Flags)
			}
		})
	}
}

// rebuild encodes sections by hand (header tables, section headers, CRC),
// so tests can produce images Build refuses to write.
func rebuild(flags uint16, secs ...section) []byte {
	be := binary.BigEndian
	h := make([]byte, HeaderSize)
	copy(h, Magic)
	be.PutUint16(h[4:], Version)
	be.PutUint16(h[6:], flags)
	be.PutUint64(h[8:], DefaultMemory)
	be.PutUint64(h[16:], DefaultCPUs)
	be.PutUint16(h[26:], uint16(len(secs)))
	off := uint64(HeaderSize)
	var body []byte
	for i, s := range secs {
		be.PutUint64(h[28+8*i:], off)
		be.PutUint64(h[284+8*i:], uint64(len(s.data)))
		var sh [SectionHeaderSize]byte
		be.PutUint16(sh[:], uint16(s.typ))
		be.PutUint64(sh[4:], uint64(len(s.data)))
		body = append(append(body, sh[:]...), s.data...)
		off += SectionHeaderSize + uint64(len(s.data))
	}
	b := append(h, body...)
	be.PutUint32(b[544:], crc32IEEE(append(append([]byte{}, b[:544]...), b[548:]...)))
	return b
}

// EIF v4 makes the metadata section mandatory ("Version 4 introduced the
// EifSectionMetadata as a mandatory section and checks that it is part of
// an enclave image file", aws-nitro-enclaves-image-format README), so an
// image without one would be refused at launch.
func TestMetadataMandatory(t *testing.T) {
	s := testSpec()
	s.Metadata = nil
	if _, _, err := Build(s); err == nil {
		t.Fatal("Build wrote a v4 image without a metadata section")
	}
	if err := s.Validate(); err == nil {
		t.Fatal("Validate accepted a Spec without metadata")
	}
	b := rebuild(0, section{SectionKernel, []byte("k")}, section{SectionCmdline, []byte("c")}, section{SectionRamdisk, []byte("r")})
	_, err := Parse(b)
	var fe *FormatError
	if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.Field != "header.num_sections" {
		t.Fatalf("image without metadata: %v", err)
	}
	img := &Image{Kernel: []byte("k"), Ramdisks: [][]byte{{1}}}
	if _, err := img.MarshalBinary(); err == nil {
		t.Fatal("MarshalBinary wrote an image without metadata")
	}
}

// Whatever Parse accepts must re-encode (the fuzz target's property); an
// empty kernel used to parse and then fail in MarshalBinary. A NUL in the
// cmdline cannot come from nitro-cli (CString::new rejects it) and Spec
// refuses it, so Parse must too.
func TestParseRejectsWhatBuildRefuses(t *testing.T) {
	md := section{SectionMetadata, []byte("{}")}
	tests := []struct {
		name  string
		b     []byte
		field string
	}{
		{"empty kernel", rebuild(0, section{SectionKernel, nil}, section{SectionCmdline, []byte("c")}, md, section{SectionRamdisk, []byte("r")}), "section[0].size"},
		{"NUL in cmdline", rebuild(0, section{SectionKernel, []byte("k")}, section{SectionCmdline, []byte("a\x00b")}, md, section{SectionRamdisk, []byte("r")}), "section[1].data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Parse(tt.b)
			var fe *FormatError
			if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.Field != tt.field {
				if err == nil {
					_, merr := img.MarshalBinary()
					t.Fatalf("accepted (re-encode: %v)", merr)
				}
				t.Fatalf("got %v, want ErrMalformed in %s", err, tt.field)
			}
		})
	}
}

// The signature section "has a maximum size of 32768 bytes
// (SIGNATURE_MAX_SIZE)" (aws-nitro-enclaves-image-format README).
func TestSignatureSizeLimit(t *testing.T) {
	k, c, md, r := section{SectionKernel, []byte("k")}, section{SectionCmdline, []byte("c")}, section{SectionMetadata, []byte("{}")}, section{SectionRamdisk, []byte("r")}
	if _, err := Parse(rebuild(0, k, c, md, r, section{SectionSignature, make([]byte, MaxSignatureSize)})); err != nil {
		t.Fatalf("signature of exactly %d bytes: %v", MaxSignatureSize, err)
	}
	_, err := Parse(rebuild(0, k, c, md, r, section{SectionSignature, make([]byte, MaxSignatureSize+1)}))
	var fe *FormatError
	if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.Field != "section[4].size" {
		t.Fatalf("oversized signature: %v", err)
	}
	s := testSpec()
	s.Signer = fixedSigner{sig: make([]byte, MaxSignatureSize+1), cert: []byte("c")}
	if _, _, err := Build(s); err == nil {
		t.Fatal("Build wrote an oversized signature section")
	}
}
