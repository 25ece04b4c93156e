package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestEnvelopeEncodingIsCanonical(t *testing.T) {
	b, err := MarshalEnvelope(&Envelope{ID: 7, Method: "echo", Body: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	// a4 (map of 4) 00 01 | 01 07 | 02 64 "echo" | 03 42 01 02
	want := mustHex("a4 0001 0107 02 64 6563686f 03 42 0102")
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding = %x, want %x", b, want)
	}
}

func TestUnmarshalEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		in      string // hex
		want    Envelope
		wantErr string // substring; empty means success
	}{
		{name: "request", in: "a4 0001 0107 02 64 6563686f 03 42 0102", want: Envelope{Version: 1, ID: 7, Method: "echo", Body: []byte{1, 2}}},
		{name: "error response", in: "a4 0001 0107 04 02 05 6e 756e6b6e6f776e206d6574686f64", want: Envelope{Version: 1, ID: 7, Code: CodeUnknownMethod, Message: "unknown method"}},
		{name: "ok response without body", in: "a2 0001 0100", want: Envelope{Version: 1}},
		{name: "ok response with code 0", in: "a3 0001 0101 04 00", want: Envelope{Version: 1, ID: 1}},
		{name: "empty body", in: "a4 0001 0107 02 61 61 03 40", want: Envelope{Version: 1, ID: 7, Method: "a", Body: []byte{}}},
		{name: "missing id", in: "a2 0001 02 61 61", wantErr: "missing request id"},
		{name: "duplicate key", in: "a3 0001 0107 0108", wantErr: "duplicate map key"},
		{name: "unknown key", in: "a3 0001 0107 0900", wantErr: "unknown field"},
		{name: "text key", in: "a3 0001 0107 61 78 00", wantErr: "unknown field"},
		{name: "text key spelling an int key", in: "a2 61 30 01 0107", wantErr: "unknown field"},
		{name: "indefinite map", in: "bf 0001 0107 ff", wantErr: "indefinite"},
		{name: "indefinite bytes", in: "a3 0001 0107 03 5f 41 01 ff", wantErr: "indefinite"},
		{name: "tag", in: "a2 0001 01 c1 07", wantErr: "tag"},
		{name: "trailing bytes", in: "a2 0001 0107 00", wantErr: "extraneous data"},
		{name: "wrong version", in: "a2 0002 0107", wantErr: "version 2"},
		{name: "missing version", in: "a1 0107", wantErr: "version 0"},
		{name: "negative id", in: "a2 0001 0120", wantErr: "cannot unmarshal"},
		{name: "undefined code", in: "a3 0001 0107 04 08", wantErr: "error code 8"},
		{name: "request with code", in: "a4 0001 0107 02 61 61 04 01", wantErr: "must not carry"},
		{name: "message without code", in: "a3 0001 0107 05 61 78", wantErr: "without an error code"},
		{name: "invalid utf-8 method", in: "a3 0001 0107 02 61 ff", wantErr: "UTF-8"},
		{name: "not a map", in: "83 01 02 03", wantErr: "cannot unmarshal"},
		// Values the CBOR library would convert: protocol v1 gives each key
		// one type, and absent differs from empty.
		{name: "empty method", in: "a3 0001 0107 02 60", wantErr: "empty method"},
		{name: "empty method with a code", in: "a4 0001 0107 02 60 04 01", wantErr: "empty method"},
		{name: "null body", in: "a3 0001 0107 03 f6", wantErr: "key 3 holds a float or simple value"},
		{name: "undefined body", in: "a3 0001 0107 03 f7", wantErr: "key 3 holds a float or simple value"},
		{name: "null method", in: "a3 0001 0107 02 f6", wantErr: "key 2 holds a float or simple value"},
		{name: "null code", in: "a3 0001 0107 04 f6", wantErr: "key 4 holds a float or simple value"},
		{name: "null message", in: "a3 0001 0107 05 f6", wantErr: "key 5 holds a float or simple value"},
		{name: "simple value 5 as code", in: "a3 0001 0107 04 e5", wantErr: "key 4 holds a float or simple value"},
		{name: "simple value 0 as code", in: "a3 0001 0107 04 e0", wantErr: "key 4 holds a float or simple value"},
		{name: "simple value 7 as id", in: "a2 0001 01 e7", wantErr: "key 1 holds a float or simple value"},
		{name: "array as body", in: "a3 0001 0107 03 82 01 02", wantErr: "key 3 holds an array"},
		{name: "empty array as body", in: "a3 0001 0107 03 80", wantErr: "key 3 holds an array"},
		{name: "empty message without code", in: "a3 0001 0107 05 60", wantErr: "without an error code"},
		{name: "empty message with code 0", in: "a4 0001 0107 04 00 05 60", wantErr: "without an error code"},
		{name: "request with code 0", in: "a4 0001 0107 02 61 61 04 00", wantErr: "must not carry"},
		{name: "request with empty message", in: "a4 0001 0107 02 61 61 05 60", wantErr: "must not carry"},
		{name: "float version", in: "a2 00 f9 3c00 0107", wantErr: "cannot unmarshal"},
		{name: "float key", in: "a2 0001 f9 3c00 07", wantErr: "unknown field"},
		{name: "negative key", in: "a3 0001 0107 20 00", wantErr: "unknown field"},
		{name: "code 256", in: "a3 0001 0107 04 19 0100", wantErr: "overflows"},
		{name: "method as byte string", in: "a3 0001 0107 02 41 61", wantErr: "cannot unmarshal"},
		{name: "empty map", in: "a0", wantErr: "version 0"},
		{name: "empty input", in: "", wantErr: "EOF"},
		{name: "truncated", in: "a2 0001 01", wantErr: "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UnmarshalEnvelope(mustHex(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrBadEnvelope) {
					t.Errorf("err = %v does not wrap ErrBadEnvelope", err)
				}
				if got.ID != 0 || got.Method != "" || got.Body != nil {
					t.Errorf("non-zero envelope %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got.Version != tt.want.Version || got.ID != tt.want.ID || got.Method != tt.want.Method ||
				!bytes.Equal(got.Body, tt.want.Body) || got.Code != tt.want.Code || got.Message != tt.want.Message {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMethodLengthLimit(t *testing.T) {
	if _, err := MarshalEnvelope(&Envelope{Method: strings.Repeat("m", MaxMethodLen)}); err != nil {
		t.Fatalf("method of %d bytes refused: %v", MaxMethodLen, err)
	}
	_, err := MarshalEnvelope(&Envelope{Method: strings.Repeat("m", MaxMethodLen+1)})
	if !errors.Is(err, ErrBadEnvelope) || !strings.Contains(err.Error(), "129 bytes") {
		t.Fatalf("err = %v", err)
	}
	// The decoder refuses it too, whoever encoded it.
	raw, _ := cbor.Marshal(map[int]any{0: 1, 1: 1, 2: strings.Repeat("m", MaxMethodLen+1)})
	if _, err := UnmarshalEnvelope(raw); !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("decoder accepted a long method: %v", err)
	}
}

func TestMarshalEnvelopeRefusesInvalidUTF8(t *testing.T) {
	// The encoder does not check UTF-8: without this, the peer's strict
	// decoder would be the first to notice.
	for _, e := range []Envelope{{ID: 1, Method: "m\xff"}, {ID: 1, Code: CodeInternal, Message: "\xc0\x80"}} {
		if b, err := MarshalEnvelope(&e); !errors.Is(err, ErrBadEnvelope) || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("MarshalEnvelope(%+q) = %x, %v; want a UTF-8 error", e.Method+e.Message, b, err)
		}
	}
}

func TestUnmarshalEnvelopeAllocs(t *testing.T) {
	// The type check copies each present key's raw value (the library does
	// all the parsing), then the typed decode copies the method and body.
	for _, tt := range []struct {
		in  string
		max float64
	}{
		{"a4 0001 0107 02 64 6563686f 03 42 0102", 8},
		{"a2 0001 0100", 4},
	} {
		raw := mustHex(tt.in)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := UnmarshalEnvelope(raw); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > tt.max {
			t.Errorf("UnmarshalEnvelope(%s) allocates %.0f times, want at most %.0f", tt.in, allocs, tt.max)
		}
	}
}

// TestEnvelopeRoundTrip is a property test over random envelopes.
func TestEnvelopeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		e := Envelope{ID: rng.Uint64()}
		if rng.IntN(2) == 0 {
			e.Method = strings.Repeat("x", 1+rng.IntN(MaxMethodLen))
		} else if rng.IntN(2) == 0 {
			e.Code = Code(1 + rng.IntN(int(maxCode)))
			e.Message = e.Code.Message()
		}
		if n := rng.IntN(64); n > 0 {
			e.Body = make([]byte, n)
			for i := range e.Body {
				e.Body[i] = byte(rng.Uint32())
			}
		}
		b, err := MarshalEnvelope(&e)
		if err != nil {
			t.Fatalf("marshal %+v: %v", e, err)
		}
		got, err := UnmarshalEnvelope(b)
		if err != nil {
			t.Fatalf("unmarshal %x: %v", b, err)
		}
		e.Version = Version
		if got.ID != e.ID || got.Method != e.Method || !bytes.Equal(got.Body, e.Body) || got.Code != e.Code || got.Message != e.Message || got.Version != e.Version {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
		again, _ := MarshalEnvelope(&got)
		if !bytes.Equal(again, b) {
			t.Fatalf("encoding is not deterministic: %x then %x", b, again)
		}
	}
}

func TestBodyUnmarshalIsStrict(t *testing.T) {
	var req AttestRequest
	dup := mustHex("a2 01 41 00 01 41 01") // key 1 twice
	if err := Unmarshal(dup, &req); err == nil {
		t.Fatal("duplicate key accepted")
	}
	unknown := mustHex("a1 09 41 00")
	if err := Unmarshal(unknown, &req); err == nil {
		t.Fatal("unknown key accepted")
	}
	good, _ := Marshal(AttestRequest{Nonce: []byte{1, 2, 3}})
	if err := Unmarshal(good, &req); err != nil || !bytes.Equal(req.Nonce, []byte{1, 2, 3}) {
		t.Fatalf("round trip: %v %+v", err, req)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, e := range []Envelope{
		{ID: 1, Method: "enclavekit.health"},
		{ID: 2, Body: []byte("body")},
		{ID: 3, Code: CodeTimeout, Message: "timeout"},
	} {
		b, _ := MarshalEnvelope(&e)
		f.Add(b)
	}
	f.Add(mustHex("bf 0001 0107 ff"))
	f.Add(mustHex("a3 0001 0107 0108"))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := UnmarshalEnvelope(in)
		if err != nil {
			if !errors.Is(err, ErrBadEnvelope) {
				t.Fatalf("error %v does not wrap ErrBadEnvelope", err)
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded envelope fails Validate: %v", err)
		}
		// Anything accepted re-encodes and decodes to the same envelope.
		b, err := MarshalEnvelope(&e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e2, err := UnmarshalEnvelope(b)
		if err != nil || e2.ID != e.ID || e2.Method != e.Method || !bytes.Equal(e2.Body, e.Body) || e2.Code != e.Code {
			t.Fatalf("re-decode: %v %+v vs %+v", err, e2, e)
		}
	})
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	e := &Envelope{ID: 42, Method: "echo", Body: make([]byte, 256)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalEnvelope(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	raw, _ := MarshalEnvelope(&Envelope{ID: 42, Method: "echo", Body: make([]byte, 256)})
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalEnvelope(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRecoverID(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		id   uint64
		ok   bool
	}{
		{"valid envelope", mustHex("a4 0001 0107 02 64 6563686f 03 42 0102"), 7, true},
		{"id only", []byte{0xa1, 0x01, 0x05}, 5, true},
		{"unknown keys around the id", mustHex("a3 09 61 78 01 18 2a 0a f6"), 42, true},
		{"id zero", []byte{0xa1, 0x01, 0x00}, 0, true},
		{"duplicate id", []byte{0xa2, 0x01, 0x05, 0x01, 0x06}, 0, false},
		{"no id", []byte{0xa1, 0x02, 0x05}, 0, false},
		{"negative id", []byte{0xa1, 0x01, 0x20}, 0, false},
		{"text id", []byte{0xa1, 0x01, 0x61, 0x31}, 0, false},
		{"indefinite map", []byte{0xbf, 0x01, 0x05, 0xff}, 0, false},
		{"deep nesting", bytes.Repeat([]byte{0x81}, 100), 0, false},
		{"empty", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := RecoverID(tt.in)
			if id != tt.id || ok != tt.ok {
				t.Fatalf("RecoverID = %d, %v; want %d, %v", id, ok, tt.id, tt.ok)
			}
		})
	}
}

func FuzzRecoverID(f *testing.F) {
	req, _ := MarshalEnvelope(&Envelope{ID: 7, Method: "echo", Body: []byte("x")})
	f.Add(req)
	f.Add([]byte{0xa1, 0x01, 0x05})
	f.Add([]byte{0xa2, 0x01, 0x05, 0x01, 0x06})
	f.Add([]byte{0xbf, 0x01, 0x05, 0xff})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ok := RecoverID(b)
		if !ok && id != 0 {
			t.Fatalf("RecoverID = %d, false", id)
		}
		// Every valid envelope carries key 1, and RecoverID finds it.
		if e, err := UnmarshalEnvelope(b); err == nil && (!ok || id != e.ID) {
			t.Fatalf("valid envelope with id %d: RecoverID = %d, %v", e.ID, id, ok)
		}
	})
}

// TestCheckEnvelopeTypesDefensive: the type check runs only on input the
// CBOR decoder accepted, but must not trust it: every prefix of an envelope
// (strings cut short, heads cut short) is refused without a panic.
func TestCheckEnvelopeTypesDefensive(t *testing.T) {
	full := mustHex("a5 0001 01 1b 0102030405060708 02 64 6563686f 03 42 0102 04 00")
	if present, err := checkEnvelopeTypes(full); err != nil || present != 0b11111 {
		t.Fatalf("checkEnvelopeTypes(full) = %b, %v", present, err)
	}
	for i := range full {
		if _, err := checkEnvelopeTypes(full[:i]); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("checkEnvelopeTypes(%x) = %v, want ErrBadEnvelope", full[:i], err)
		}
	}
}

// TestEnvelopeFastPathMatchesLibrary checks the hand-written codec against
// the library: the encoding is byte for byte cbor.CoreDetEncOptions', and
// the fast decoder returns exactly what the strict decoder returns, for
// random envelopes and for every single-byte change of their encodings.
func TestEnvelopeFastPathMatchesLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		e := Envelope{ID: rng.Uint64() >> (rng.IntN(64))}
		switch rng.IntN(3) {
		case 0:
			e.Method = strings.Repeat([]string{"é", "m"}[rng.IntN(2)], 1+rng.IntN(MaxMethodLen/2))
		case 1:
			e.Code = Code(1 + rng.IntN(int(maxCode)))
			e.Message = e.Code.Message()
		}
		if n := rng.IntN(300); n > 0 && rng.IntN(4) > 0 {
			e.Body = make([]byte, n)
			for i := range e.Body {
				e.Body[i] = byte(rng.Uint32())
			}
		}
		c := e
		c.Version = Version
		want, err := encMode.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := MarshalEnvelope(&e)
		if err != nil {
			t.Fatalf("MarshalEnvelope(%+v): %v", e, err)
		}
		if n, err := EnvelopeSize(&e); !bytes.Equal(got, want) || n != len(want) || err != nil {
			t.Fatalf("MarshalEnvelope(%+v) = %x (size %d, %v), library %x", e, got, n, err, want)
		}
		if app, _ := AppendEnvelope([]byte{9}, &e); !bytes.Equal(app[1:], want) {
			t.Fatalf("AppendEnvelope = %x, want %x", app[1:], want)
		}
		inputs := [][]byte{want}
		if i%10 == 0 {
			for j := range want {
				m := bytes.Clone(want)
				m[j] = byte(rng.Uint32())
				inputs = append(inputs, m, want[:j])
			}
		}
		for _, in := range inputs {
			fe, fp, ok := decodeEnvelopeFast(in)
			if !ok {
				continue
			}
			se, sp, err := decodeEnvelopeStrict(in)
			if err != nil {
				t.Fatalf("%x: fast path accepted, strict decoder: %v", in, err)
			}
			if fp != sp || fe.Version != se.Version || fe.ID != se.ID || fe.Method != se.Method || fe.Code != se.Code ||
				fe.Message != se.Message || !bytes.Equal(fe.Body, se.Body) || (fe.Body == nil) != (se.Body == nil) {
				t.Fatalf("%x: fast %+v %b, strict %+v %b", in, fe, fp, se, sp)
			}
		}
	}
}

// TestWriteEnvelope checks that WriteEnvelope writes exactly the frame
// WriteFrame(MarshalEnvelope(e)) writes, refuses what MarshalEnvelope
// refuses, and refuses an envelope over the limit before writing anything.
func TestWriteEnvelope(t *testing.T) {
	for _, e := range []Envelope{
		{ID: 1, Method: "echo", Body: []byte("hi")},
		{ID: 2, Code: CodeTimeout, Message: CodeTimeout.Message()},
		{Version: Version, ID: 3, Body: bytes.Repeat([]byte{7}, coalesceLimit+10)},
	} {
		var got, want bytes.Buffer
		fw, _ := NewFrameWriter(&got, 0)
		if err := fw.WriteEnvelope(&e); err != nil {
			t.Fatal(err)
		}
		p, err := MarshalEnvelope(&e)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFrame(&want, p, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("WriteEnvelope(%.40v) wrote %d bytes, WriteFrame(MarshalEnvelope) %d, or different ones", e, got.Len(), want.Len())
		}
	}
	var out bytes.Buffer
	fw, _ := NewFrameWriter(&out, 16)
	if err := fw.WriteEnvelope(&Envelope{ID: 1, Body: make([]byte, 16)}); !errors.Is(err, ErrFrameTooLarge) || out.Len() != 0 {
		t.Fatalf("over the limit: %v, %d bytes written", err, out.Len())
	}
	if err := fw.WriteEnvelope(&Envelope{ID: 1, Method: "\xff"}); !errors.Is(err, ErrBadEnvelope) || out.Len() != 0 {
		t.Fatalf("invalid envelope: %v, %d bytes written", err, out.Len())
	}
}

// FuzzEnvelopeFastPath checks that whatever the fast decoder accepts, the
// strict library decoder accepts too, with the same result.
func FuzzEnvelopeFastPath(f *testing.F) {
	for _, e := range []Envelope{
		{ID: 1, Method: "enclavekit.health"},
		{ID: 1 << 40, Body: []byte("body")},
		{ID: 3, Code: CodeTimeout, Message: "timeout"},
	} {
		b, _ := MarshalEnvelope(&e)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fe, fp, ok := decodeEnvelopeFast(in)
		if !ok {
			return
		}
		se, sp, err := decodeEnvelopeStrict(in)
		if err != nil {
			t.Fatalf("%x: fast path accepted, strict decoder: %v", in, err)
		}
		if fp != sp || fe.Version != se.Version || fe.ID != se.ID || fe.Method != se.Method || fe.Code != se.Code ||
			fe.Message != se.Message || !bytes.Equal(fe.Body, se.Body) || (fe.Body == nil) != (se.Body == nil) {
			t.Fatalf("%x: fast %+v %b, strict %+v %b", in, fe, fp, se, sp)
		}
	})
}
