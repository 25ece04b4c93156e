package eif

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// synth returns deterministic pseudo-random bytes.
func synth(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func testSpec() Spec {
	md := &Metadata{ImageName: "test", ImageVersion: "1", BuildMetadata: BuildInfo{BuildTime: "1970-01-01T00:00:00Z", BuildTool: "enclavekit", BuildToolVersion: "test", OperatingSystem: "Linux", KernelVersion: "6.1"}}
	mb, err := md.Marshal()
	if err != nil {
		panic(err)
	}
	return Spec{
		Kernel:   synth(1, 300),
		Cmdline:  "console=ttyS0 reboot=k",
		Ramdisks: [][]byte{synth(2, 200), synth(3, 250)},
		Metadata: mb,
	}
}

func mustBuild(t testing.TB, s Spec) ([]byte, Measurements) {
	t.Helper()
	b, m, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// fixCRC recomputes the CRC so that a structural change is what Parse sees.
func fixCRC(b []byte) []byte {
	c, _ := CRC(b)
	binary.BigEndian.PutUint32(b[crcOffset:], c)
	return b
}

func TestRoundTrip(t *testing.T) {
	s := testSpec()
	b, _ := mustBuild(t, s)
	img, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img.Kernel, s.Kernel) || string(img.Cmdline) != s.Cmdline || !bytes.Equal(img.Metadata, s.Metadata) {
		t.Fatal("kernel, cmdline or metadata differ after round trip")
	}
	if len(img.Ramdisks) != 2 || !bytes.Equal(img.Ramdisks[0], s.Ramdisks[0]) || !bytes.Equal(img.Ramdisks[1], s.Ramdisks[1]) {
		t.Fatal("ramdisks differ after round trip")
	}
	if img.DefaultMemory != DefaultMemory || img.DefaultCPUs != DefaultCPUs || img.Flags != 0 || img.Signed() {
		t.Fatalf("header fields: %+v", img)
	}
	again, err := img.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatal("re-encoding a parsed image changed its bytes")
	}
	if int64(len(b)) != img.EncodedSize() {
		t.Fatalf("EncodedSize %d, len %d", img.EncodedSize(), len(b))
	}
	md, err := ParseMetadata(img.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if md.ImageName != "test" || md.BuildMetadata.KernelVersion != "6.1" || string(md.DockerInfo) != "null" {
		t.Fatalf("metadata: %+v", md)
	}
}

func TestLayout(t *testing.T) {
	s := testSpec()
	b, _ := mustBuild(t, s)
	be := binary.BigEndian
	if string(b[:4]) != ".eif" || be.Uint16(b[4:]) != 4 || be.Uint16(b[26:]) != 5 {
		t.Fatalf("header start % x", b[:28])
	}
	// Section order as nitro-cli writes it, each offset pointing at a section header.
	want := []SectionType{SectionKernel, SectionCmdline, SectionMetadata, SectionRamdisk, SectionRamdisk}
	for i, typ := range want {
		off := be.Uint64(b[offOffsets+8*i:])
		if got := SectionType(be.Uint16(b[off:])); got != typ {
			t.Errorf("section %d: type %v, want %v", i, got, typ)
		}
		if be.Uint64(b[off+4:]) != be.Uint64(b[offSizes+8*i:]) {
			t.Errorf("section %d: size mismatch", i)
		}
	}
	if be.Uint64(b[offOffsets:]) != HeaderSize {
		t.Error("kernel section does not follow the header")
	}
	// CRC as nitro-cli: everything except bytes 544..547.
	c := crc32IEEE(append(append([]byte{}, b[:544]...), b[548:]...))
	if be.Uint32(b[544:]) != c {
		t.Errorf("stored CRC %08x, independent CRC %08x", be.Uint32(b[544:]), c)
	}
}

// crc32IEEE is a bitwise CRC-32/ISO-HDLC, independent of hash/crc32.
func crc32IEEE(b []byte) uint32 {
	c := ^uint32(0)
	for _, x := range b {
		c ^= uint32(x)
		for range 8 {
			if c&1 == 1 {
				c = c>>1 ^ 0xedb88320
			} else {
				c >>= 1
			}
		}
	}
	return ^c
}

func TestPCRsFromFormula(t *testing.T) {
	z := make([]byte, 48)
	ext := func(parts ...[]byte) string {
		inner := sha512.Sum384(bytes.Join(parts, nil))
		outer := sha512.Sum384(append(append([]byte{}, z...), inner[:]...))
		return hex.EncodeToString(outer[:])
	}
	big := synth(9, parallelMin+17) // exercise the concurrent path too
	tests := []struct {
		name     string
		ramdisks [][]byte
	}{
		{"one ramdisk", [][]byte{synth(2, 10)}},
		{"two ramdisks", [][]byte{synth(2, 10), synth(3, 20)}},
		{"three ramdisks", [][]byte{synth(2, 10), synth(3, 20), synth(4, 30)}},
		{"large app", [][]byte{synth(2, 10), big}},
		{"empty ramdisks", [][]byte{{}, {}}},
	}
	k, c := synth(1, 100), []byte("console=ttyS0")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Measure(k, c, tt.ramdisks)
			all := append([][]byte{k, c}, tt.ramdisks...)
			if got, want := m.PCR0.String(), ext(all...); got != want {
				t.Errorf("PCR0 %s, want %s", got, want)
			}
			if got, want := m.PCR1.String(), ext(k, c, tt.ramdisks[0]); got != want {
				t.Errorf("PCR1 %s, want %s", got, want)
			}
			if got, want := m.PCR2.String(), ext(tt.ramdisks[1:]...); got != want {
				t.Errorf("PCR2 %s, want %s", got, want)
			}
		})
	}
	cert := []byte("not really DER")
	if got, want := PCR8(cert).String(), ext(cert); got != want {
		t.Errorf("PCR8 %s, want %s", got, want)
	}
	// PCR2 of an image with only a bootstrap ramdisk: extend of H("").
	if got, want := Measure(k, c, [][]byte{{1}}).PCR2.String(), ext(); got != want {
		t.Errorf("PCR2 without app ramdisk %s, want %s", got, want)
	}
}

func TestBuildDeterministic(t *testing.T) {
	b1, m1 := mustBuild(t, testSpec())
	b2, m2 := mustBuild(t, testSpec())
	if !bytes.Equal(b1, b2) {
		t.Fatal("two builds of the same spec differ")
	}
	if m1.PCR0 != m2.PCR0 || m1.PCR1 != m2.PCR1 || m1.PCR2 != m2.PCR2 {
		t.Fatal("two builds of the same spec measure differently")
	}
	img, err := Parse(b1)
	if err != nil {
		t.Fatal(err)
	}
	if img.Measure() != m1 {
		t.Fatal("measurements of the parsed image differ from Build's")
	}
	// Metadata is not measured.
	s := testSpec()
	s.Metadata = []byte(`{"other":1}`)
	_, m3 := mustBuild(t, s)
	if m3 != m1 {
		t.Fatal("metadata changed the PCRs")
	}
}

func TestEveryTruncationRejected(t *testing.T) {
	b, _ := mustBuild(t, testSpec())
	for n := range len(b) {
		_, err := Parse(b[:n])
		if err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(b))
		}
		var fe *FormatError
		if !errors.As(err, &fe) || !(errors.Is(err, ErrTruncated) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrCRC)) {
			t.Fatalf("truncated to %d: unexpected error %v", n, err)
		}
	}
	// Truncations that keep a consistent header are reported as truncated.
	_, err := Parse(b[:len(b)-1])
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "ramdisk section claims 250 bytes, 249 left") {
		t.Fatalf("last byte cut: %v", err)
	}
}

func TestEveryByteFlipRejected(t *testing.T) {
	b, _ := mustBuild(t, testSpec())
	for i := range b {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(b)
			c[i] ^= mask
			_, err := Parse(c)
			if err == nil {
				t.Fatalf("flip 0x%02x at %d: accepted", mask, i)
			}
			stored, _ := StoredCRC(c)
			computed, _ := CRC(c)
			if stored == computed {
				t.Fatalf("flip 0x%02x at %d: CRC still matches", mask, i)
			}
			// With the CRC ignored, a flip in a data byte still parses; its
			// CRC failure is what describe reports.
			if _, err := ParseWithOptions(c, ParseOptions{IgnoreCRC: true}); err == nil {
				if _, err := Parse(c); !errors.Is(err, ErrCRC) {
					t.Fatalf("flip at %d: %v, want ErrCRC", i, err)
				}
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	base, _ := mustBuild(t, testSpec())
	be := binary.BigEndian
	kernelLen := uint64(300)
	cmdOff := uint64(HeaderSize + SectionHeaderSize + kernelLen)
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		field  string
	}{
		{"short header", func(b []byte) []byte { return b[:100] }, ErrTruncated, "header"},
		{"magic", func(b []byte) []byte { b[0] = 'x'; return b }, ErrMagic, "header.magic"},
		{"version 3", func(b []byte) []byte { be.PutUint16(b[4:], 3); return b }, ErrVersion, "header.version"},
		{"flags", func(b []byte) []byte { be.PutUint16(b[6:], 2); return b }, ErrMalformed, "header.flags"},
		{"reserved", func(b []byte) []byte { be.PutUint16(b[24:], 1); return b }, ErrMalformed, "header.reserved"},
		{"unused", func(b []byte) []byte { be.PutUint32(b[540:], 1); return b }, ErrMalformed, "header.unused"},
		{"too many sections", func(b []byte) []byte { be.PutUint16(b[26:], 33); return b }, ErrMalformed, "header.num_sections"},
		{"fewer sections than file", func(b []byte) []byte {
			be.PutUint16(b[26:], 4)
			be.PutUint64(b[offOffsets+8*4:], 0)
			be.PutUint64(b[offSizes+8*4:], 0)
			return b
		}, ErrTrailing, "file"},
		{"unused offset entry", func(b []byte) []byte { be.PutUint64(b[offOffsets+8*31:], 1); return b }, ErrMalformed, "header.section_offsets[31]"},
		{"unused size entry", func(b []byte) []byte { be.PutUint64(b[offSizes+8*7:], 1); return b }, ErrMalformed, "header.section_sizes[7]"},
		{"offset table wrong", func(b []byte) []byte { be.PutUint64(b[offOffsets+8:], cmdOff+1); return b }, ErrMalformed, "header.section_offsets[1]"},
		{"size table wrong", func(b []byte) []byte { be.PutUint64(b[offSizes:], kernelLen+1); return b }, ErrMalformed, "header.section_sizes[0]"},
		{"huge section size", func(b []byte) []byte {
			be.PutUint64(b[HeaderSize+4:], ^uint64(0))
			be.PutUint64(b[offSizes:], ^uint64(0))
			return b
		}, ErrTruncated, "section[0].size"},
		{"section flags", func(b []byte) []byte { be.PutUint16(b[HeaderSize+2:], 1); return b }, ErrMalformed, "section[0].flags"},
		{"invalid section type", func(b []byte) []byte { be.PutUint16(b[HeaderSize:], 0); return b }, ErrMalformed, "section[0].type"},
		{"unknown section type", func(b []byte) []byte { be.PutUint16(b[HeaderSize:], 6); return b }, ErrMalformed, "section[0].type"},
		{"cmdline first", func(b []byte) []byte { be.PutUint16(b[HeaderSize:], uint16(SectionCmdline)); return b }, ErrMalformed, "section[0].type"},
		{"two kernels", func(b []byte) []byte { be.PutUint16(b[cmdOff:], uint16(SectionKernel)); return b }, ErrMalformed, "section[1].type"},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrTrailing, "file"},
		{"no ramdisk", func(b []byte) []byte {
			// keep kernel, cmdline, metadata only
			n := be.Uint64(b[offOffsets+8*3:])
			for i := 3; i < 5; i++ {
				be.PutUint64(b[offOffsets+8*i:], 0)
				be.PutUint64(b[offSizes+8*i:], 0)
			}
			be.PutUint16(b[26:], 3)
			return b[:n]
		}, ErrMalformed, "header.num_sections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(base))
			if len(b) >= HeaderSize {
				b = fixCRC(b)
			}
			_, err := Parse(b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("error %v: field %q, want %q", err, fe.Field, tt.field)
			}
		})
	}
	t.Run("crc", func(t *testing.T) {
		b := bytes.Clone(base)
		b[len(b)-1] ^= 1
		_, err := Parse(b)
		if !errors.Is(err, ErrCRC) || !strings.Contains(err.Error(), "header.eif_crc32 at offset 544") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"ok", func(*Spec) {}, ""},
		{"no kernel", func(s *Spec) { s.Kernel = nil }, "Kernel is empty"},
		{"nul cmdline", func(s *Spec) { s.Cmdline = "a\x00b" }, "NUL byte at index 1"},
		{"no ramdisk", func(s *Spec) { s.Ramdisks = nil }, "Ramdisks is empty"},
		{"too many ramdisks", func(s *Spec) { s.Ramdisks = make([][]byte, 29) }, "limit 32"},
		{"flags", func(s *Spec) { s.Flags = 4 }, "unknown bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec()
			tt.mutate(&s)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	// 28 ramdisks plus kernel, cmdline, metadata and signature fill the table.
	s := testSpec()
	s.Ramdisks = make([][]byte, 28)
	b, _ := mustBuild(t, s)
	if img, err := Parse(b); err != nil || len(img.Ramdisks) != 28 {
		t.Fatalf("28 ramdisks: %v", err)
	}
}

type fakeSigner struct{ cert []byte }

func (f fakeSigner) SignPCR0(p PCR) ([]byte, error) { return append([]byte("sig:"), p[:]...), nil }
func (f fakeSigner) CertificateDER() []byte         { return f.cert }

func TestBuildSigned(t *testing.T) {
	s := testSpec()
	s.Signer = fakeSigner{cert: []byte("cert")}
	b, m := mustBuild(t, s)
	img, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !img.Signed() || !bytes.Equal(img.Signature, append([]byte("sig:"), m.PCR0[:]...)) {
		t.Fatal("signature section not written")
	}
	if m.PCR8 == nil || *m.PCR8 != PCR8([]byte("cert")) {
		t.Fatal("PCR8 not computed from the certificate")
	}
	unsigned, _ := mustBuild(t, testSpec())
	u, _ := Parse(unsigned)
	if u.Measure().PCR0 != m.PCR0 {
		t.Fatal("signing changed PCR0")
	}
}

func TestParseMetadataStrict(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{`{"ImageName":"a","ImageVersion":"b","BuildMetadata":{"BuildTime":"t","BuildTool":"x","BuildToolVersion":"1","OperatingSystem":"Linux","KernelVersion":"6"},"DockerInfo":null,"CustomMetadata":null}`, true},
		{`{"ImageName":"a","Extra":1}`, false},
		{`{"ImageName":"a"} {}`, false},
		{`{"ImageName":`, false},
		{`[]`, false},
	}
	for _, tt := range tests {
		_, err := ParseMetadata([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestReadFileNamesFile(t *testing.T) {
	b, _ := mustBuild(t, testSpec())
	p := filepath.Join(t.TempDir(), "x.eif")
	if err := os.WriteFile(p, b[:600], 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadFile(p, ParseOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("error does not name the file: %v", err)
	}
}
