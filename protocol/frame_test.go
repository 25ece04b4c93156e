package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

func frameBytes(payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	return append(b, payload...)
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []byte
		wantErr []error // every one must match with errors.Is
		notErr  []error // none may match
	}{
		{name: "empty frame", in: []byte{0, 0, 0, 0}, want: []byte{}},
		{name: "small", in: frameBytes([]byte("hello")), want: []byte("hello")},
		{name: "exactly max", in: frameBytes(bytes.Repeat([]byte{7}, 10)), max: 10, want: bytes.Repeat([]byte{7}, 10)},
		{name: "clean EOF", in: nil, wantErr: []error{io.EOF}, notErr: []error{ErrFrameTruncated}},
		{name: "partial header", in: []byte{0, 0}, wantErr: []error{ErrFrameTruncated, io.ErrUnexpectedEOF}},
		{name: "truncated payload", in: []byte{0, 0, 0, 5, 'a', 'b'}, wantErr: []error{ErrFrameTruncated, io.ErrUnexpectedEOF}, notErr: []error{ErrFrameTooLarge}},
		{name: "header only", in: []byte{0, 0, 0, 1}, wantErr: []error{ErrFrameTruncated}},
		{name: "over max by one", in: frameBytes(make([]byte, 11)), max: 10, wantErr: []error{ErrFrameTooLarge}, notErr: []error{ErrFrameLengthInvalid, ErrFrameTruncated}},
		{name: "4 GiB prefix", in: []byte{0xff, 0xff, 0xff, 0xff}, wantErr: []error{ErrFrameLengthInvalid}, notErr: []error{ErrFrameTooLarge, ErrFrameTruncated}},
		{name: "just over ceiling", in: binary.BigEndian.AppendUint32(nil, MaxFrameSizeLimit+1), max: MaxFrameSizeLimit, wantErr: []error{ErrFrameLengthInvalid}},
		{name: "over default max", in: binary.BigEndian.AppendUint32(nil, DefaultMaxFrameSize+1), wantErr: []error{ErrFrameTooLarge}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr, err := NewFrameReader(bytes.NewReader(tt.in), tt.max)
			if err != nil {
				t.Fatal(err)
			}
			got, err := fr.ReadFrame()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("ReadFrame: %v", err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("payload = %q, want %q", got, tt.want)
				}
				if _, err := fr.ReadFrame(); err != io.EOF {
					t.Fatalf("second ReadFrame = %v, want io.EOF", err)
				}
				return
			}
			if got != nil {
				t.Errorf("payload %q returned with error", got)
			}
			for _, w := range tt.wantErr {
				if !errors.Is(err, w) {
					t.Errorf("err = %v, want errors.Is %v", err, w)
				}
			}
			for _, w := range tt.notErr {
				if errors.Is(err, w) {
					t.Errorf("err = %v must not match %v", err, w)
				}
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestOversizedLengthReadsNothingMore(t *testing.T) {
	// The payload that follows must not be read: the error comes from the
	// header alone.
	in := append([]byte{0xff, 0xff, 0xff, 0xff}, make([]byte, 100)...)
	cr := &countingReader{r: bytes.NewReader(in)}
	if _, err := ReadFrame(cr, nil, 0); !errors.Is(err, ErrFrameLengthInvalid) {
		t.Fatalf("err = %v", err)
	}
	if cr.n != HeaderSize {
		t.Fatalf("read %d bytes, want only the %d-byte header", cr.n, HeaderSize)
	}
}

func TestDeclaredLengthDoesNotAllocate(t *testing.T) {
	// A peer that declares 64 MiB and sends 10 bytes must not cost 64 MiB:
	// the buffer grows with the data that arrives.
	in := append(binary.BigEndian.AppendUint32(nil, MaxFrameSizeLimit), make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const reads = 10
	for range reads {
		if _, err := ReadFrame(bytes.NewReader(in), nil, MaxFrameSizeLimit); !errors.Is(err, ErrFrameTruncated) {
			t.Fatalf("err = %v, want ErrFrameTruncated", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > 2*growStep {
		t.Fatalf("a truncated 64 MiB frame allocated %d bytes per read, want at most %d", per, 2*growStep)
	}
}

func TestConfiguredMax(t *testing.T) {
	for _, m := range []int{-1, MaxFrameSizeLimit + 1} {
		if _, err := NewFrameReader(nil, m); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("NewFrameReader(max=%d) err = %v", m, err)
		}
		if _, err := NewFrameWriter(nil, m); err == nil {
			t.Errorf("NewFrameWriter(max=%d) accepted", m)
		}
	}
	fr, err := NewFrameReader(nil, 0)
	if err != nil || fr.Max() != DefaultMaxFrameSize {
		t.Fatalf("default max = %d, %v", fr.Max(), err)
	}
}

func TestWriteFrameRefusesOversize(t *testing.T) {
	var buf bytes.Buffer
	fw, _ := NewFrameWriter(&buf, 8)
	if err := fw.WriteFrame(make([]byte, 9)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes written for a refused frame", buf.Len())
	}
}

// TestFrameRoundTrip is a property test: any sequence of payloads, written
// and read back through readers that return data in random-sized pieces,
// comes back unchanged.
func TestFrameRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		var stream bytes.Buffer
		fw, _ := NewFrameWriter(&stream, MaxFrameSizeLimit)
		var want [][]byte
		for range rng.IntN(8) {
			size := rng.IntN(300)
			if rng.IntN(10) == 0 {
				size = coalesceLimit + rng.IntN(3*growStep)
			}
			p := make([]byte, size)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			want = append(want, p)
			if err := fw.WriteFrame(p); err != nil {
				t.Fatal(err)
			}
		}
		fr, _ := NewFrameReader(&chunkReader{r: &stream, rng: rng}, MaxFrameSizeLimit)
		for i, w := range want {
			got, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("iter %d frame %d: %v", iter, i, err)
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("iter %d frame %d: got %d bytes, want %d", iter, i, len(got), len(w))
			}
		}
		if _, err := fr.ReadFrame(); err != io.EOF {
			t.Fatalf("iter %d: trailing read = %v, want io.EOF", iter, err)
		}
	}
}

type chunkReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1+c.rng.IntN(len(p))]
	}
	return c.r.Read(p)
}

func TestFrameReaderSteadyStateAllocs(t *testing.T) {
	payload := bytes.Repeat([]byte{1}, 4096)
	stream := bytes.Repeat(frameBytes(payload), 200)
	r := bytes.NewReader(stream)
	fr, _ := NewFrameReader(r, 0)
	if _, err := fr.ReadFrame(); err != nil { // warm the buffer
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("steady-state ReadFrame allocates %.1f times per frame, want 0", allocs)
	}
	var sink bytes.Buffer
	sink.Grow(1 << 20)
	fw, _ := NewFrameWriter(&sink, 0)
	_ = fw.WriteFrame(payload)
	allocs = testing.AllocsPerRun(100, func() { _ = fw.WriteFrame(payload) })
	if allocs != 0 {
		t.Fatalf("steady-state WriteFrame allocates %.1f times per frame, want 0", allocs)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add(frameBytes([]byte("hello")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 5, 'a'})
	f.Add(append(frameBytes([]byte{1, 2}), frameBytes(nil)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, _ := NewFrameReader(bytes.NewReader(in), 1024)
		consumed := 0
		for {
			p, err := fr.ReadFrame()
			if err != nil {
				if p != nil {
					t.Fatal("payload returned with an error")
				}
				if err == io.EOF && consumed != len(in) {
					t.Fatalf("io.EOF after %d of %d bytes", consumed, len(in))
				}
				return
			}
			if len(p) > 1024 {
				t.Fatalf("payload of %d bytes exceeds the limit", len(p))
			}
			if !bytes.Equal(in[consumed+HeaderSize:consumed+HeaderSize+len(p)], p) {
				t.Fatal("payload differs from the input")
			}
			consumed += HeaderSize + len(p)
		}
	})
}

func benchmarkFrames(b *testing.B, size int) {
	payload := make([]byte, size)
	var buf bytes.Buffer
	buf.Grow(size + HeaderSize)
	fw, _ := NewFrameWriter(&buf, 0)
	fr, _ := NewFrameReader(&buf, 0)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := fw.WriteFrame(payload); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFrameRoundTrip64B(b *testing.B)  { benchmarkFrames(b, 64) }
func BenchmarkFrameRoundTrip4KiB(b *testing.B) { benchmarkFrames(b, 4<<10) }
func BenchmarkFrameRoundTrip1MiB(b *testing.B) { benchmarkFrames(b, 1<<20) }

// shortWriter accepts at most n bytes per call and reports no error, which
// breaks the io.Writer contract.
type shortWriter struct{ n int }

func (w shortWriter) Write(p []byte) (int, error) { return min(len(p), w.n), nil }

func TestWriteFrameReportsShortWrite(t *testing.T) {
	for _, size := range []int{10, coalesceLimit + 1} {
		fw, _ := NewFrameWriter(shortWriter{n: 3}, MaxFrameSizeLimit)
		if err := fw.WriteFrame(make([]byte, size)); !errors.Is(err, io.ErrShortWrite) {
			t.Errorf("payload of %d bytes: err = %v, want io.ErrShortWrite", size, err)
		}
	}
}

// TestStalledFrameCostsWhatArrived: a peer that declares a large frame and
// stops after sending part of it must cost no more than what it sent plus
// one growStep, as documented (docs/architecture.md, ReadFrame), however
// much it sent. A buffer that doubles would run up to the received size
// ahead of the data.
func TestStalledFrameCostsWhatArrived(t *testing.T) {
	for _, sent := range []int{growStep + 1, 1<<20 + 1, 3<<20 + 17} {
		in := append(binary.BigEndian.AppendUint32(nil, MaxFrameSizeLimit), make([]byte, sent)...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const reads = 4
		for range reads {
			if _, err := ReadFrame(bytes.NewReader(in), nil, MaxFrameSizeLimit); !errors.Is(err, ErrFrameTruncated) {
				t.Fatalf("err = %v, want ErrFrameTruncated", err)
			}
		}
		runtime.ReadMemStats(&after)
		// The chunk list itself costs a little too: allow one more step.
		limit := uint64(sent + 2*growStep)
		if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > limit {
			t.Errorf("%d bytes of a declared 64 MiB frame allocated %d bytes per read, want at most %d", sent, per, limit)
		}
	}
}

// TestFrameLargeSteadyStateAllocs covers the paths the 4 KiB test does not:
// frames above coalesceLimit (written with two calls) and frames larger
// than growStep (read in chunks the first time).
func TestFrameLargeSteadyStateAllocs(t *testing.T) {
	payload := bytes.Repeat([]byte{2}, coalesceLimit+growStep+5)
	var sink bytes.Buffer
	sink.Grow(4 * len(payload))
	fw, _ := NewFrameWriter(&sink, 0)
	if err := fw.WriteFrame(payload); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		sink.Reset()
		if err := fw.WriteFrame(payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("steady-state WriteFrame of %d bytes allocates %.1f times per frame, want 0", len(payload), allocs)
	}
	r := bytes.NewReader(nil)
	fr, _ := NewFrameReader(r, 0)
	stream := frameBytes(payload)
	r.Reset(stream)
	if got, err := fr.ReadFrame(); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("first ReadFrame: %d bytes, %v", len(got), err)
	}
	allocs = testing.AllocsPerRun(20, func() {
		r.Reset(stream)
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("steady-state ReadFrame of %d bytes allocates %.1f times per frame, want 0", len(payload), allocs)
	}
}
