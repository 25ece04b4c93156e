package protocol

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"text/template"

	"github.com/fxamacker/cbor/v2"
)

func TestEqual(t *testing.T) {
	tests := []struct {
		a, b []byte
		want bool
	}{
		{nil, nil, true},
		{nil, []byte{}, true},
		{[]byte("abc"), []byte("abc"), true},
		{[]byte("abc"), []byte("abd"), false},
		{[]byte("abc"), []byte("ab"), false},
		{[]byte{0}, nil, false},
	}
	for _, tt := range tests {
		if got := Equal(tt.a, tt.b); got != tt.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestPadUnpad(t *testing.T) {
	tests := []struct {
		in      []byte
		bucket  int
		wantLen int
	}{
		{nil, 16, 16},
		{[]byte("a"), 16, 16},
		{bytes.Repeat([]byte{0}, 15), 16, 16},
		{bytes.Repeat([]byte{0x80}, 16), 16, 32}, // a full bucket gains a whole bucket
		{[]byte("abc"), 1, 4},
		{bytes.Repeat([]byte{1}, 1000), 256, 1024},
	}
	for _, tt := range tests {
		in := append([]byte(nil), tt.in...)
		p, err := Pad(in, tt.bucket)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != tt.wantLen {
			t.Errorf("Pad(%d bytes, %d) = %d bytes, want %d", len(tt.in), tt.bucket, len(p), tt.wantLen)
		}
		u, err := Unpad(p, tt.bucket)
		if err != nil {
			t.Fatalf("Unpad: %v", err)
		}
		if !bytes.Equal(u, tt.in) {
			t.Errorf("Unpad(Pad(%x)) = %x", tt.in, u)
		}
	}
}

func TestUnpadRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not a multiple", make([]byte, 15)},
		{"all zeros", make([]byte, 16)},
		{"last byte not marker", append(make([]byte, 15), 1)},
		{"wrong marker", append([]byte("abc\x81"), make([]byte, 12)...)},
		{"more than a bucket of padding", append([]byte("abc\x80"), make([]byte, 28)...)},
		{"marker alone in two buckets", append([]byte{0x80}, make([]byte, 31)...)},
	}
	for _, tt := range tests {
		if _, err := Unpad(tt.in, 16); !errors.Is(err, ErrBadPadding) {
			t.Errorf("%s: err = %v, want ErrBadPadding", tt.name, err)
		}
	}
	if _, err := Pad(nil, 0); err == nil {
		t.Error("bucket 0 accepted")
	}
}

func FuzzUnpad(f *testing.F) {
	f.Add([]byte("abc\x80\x00\x00\x00"), 8)
	f.Add(make([]byte, 8), 8)
	f.Fuzz(func(t *testing.T, in []byte, bucket int) {
		u, err := Unpad(in, bucket)
		if err != nil {
			return
		}
		p, err := Pad(append([]byte(nil), u...), bucket)
		if err != nil || !bytes.Equal(p, in) {
			t.Fatalf("Pad(Unpad(%x)) = %x, %v", in, p, err)
		}
	})
}

func TestZero(t *testing.T) {
	b := []byte("key material")
	Zero(b)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatalf("Zero left %q", b)
	}
}

func TestSecretRedacts(t *testing.T) {
	const raw = "hunter2-very-secret"
	s := NewSecret([]byte(raw))
	type wrapper struct {
		Name string
		Key  Secret
		Ptr  *Secret
	}
	w := wrapper{Name: "n", Key: s, Ptr: &s}
	outputs := map[string]string{
		"String": s.String(),
		"%v":     fmt.Sprintf("%v", s),
		"%+v":    fmt.Sprintf("%+v", w),
		"%#v":    fmt.Sprintf("%#v", w),
		"%s":     fmt.Sprintf("%s", s),
		"%x":     fmt.Sprintf("%x", s),
		"%q":     fmt.Sprintf("%q", s),
		"%d":     fmt.Sprintf("%d", s),
		"ptr %v": fmt.Sprintf("%v", &s),
	}
	js, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(js)
	var logBuf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logBuf, nil), slog.NewJSONHandler(&logBuf, nil)} {
		slog.New(h).Info("loaded", "key", s, "group", slog.GroupValue(slog.Any("inner", s)))
	}
	outputs["slog"] = logBuf.String()
	for name, out := range outputs {
		if strings.Contains(out, raw) || strings.Contains(out, fmt.Sprintf("%x", raw)) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s does not say %s: %s", name, Redacted, out)
		}
	}
	if _, err := cbor.Marshal(w); !errors.Is(err, ErrSecretEncode) {
		t.Errorf("CBOR encoding of a Secret: err = %v, want ErrSecretEncode", err)
	}
	if _, err := s.MarshalText(); !errors.Is(err, ErrSecretEncode) {
		t.Errorf("MarshalText: err = %v", err)
	}
}

func TestSecretCompareAndWipe(t *testing.T) {
	src := []byte("k1")
	a := NewSecret(src)
	Zero(src) // NewSecret copied
	if !a.EqualBytes([]byte("k1")) || !a.Equal(NewSecret([]byte("k1"))) || a.Equal(NewSecret([]byte("k2"))) {
		t.Fatal("Equal is wrong")
	}
	b := a // copies share the bytes
	a.Wipe()
	if !bytes.Equal(b.Bytes(), []byte{0, 0}) {
		t.Fatalf("Wipe did not clear a copy: %x", b.Bytes())
	}
}

// TestSecretRedactsInUnexportedFields: fmt cannot call a Secret's methods
// when it sits in an unexported field (of a config struct, say) and prints
// it by reflection instead, which must not reach the bytes. Other printers
// and encoders that the Secret's methods steer are checked too.
func TestSecretRedactsInUnexportedFields(t *testing.T) {
	const raw = "hunter2-very-secret"
	s := NewSecret([]byte(raw))
	type inner struct{ key Secret }
	type config struct {
		name  string
		key   Secret
		ptr   *Secret
		list  []Secret
		byKey map[string]Secret
		in    inner
	}
	c := config{name: "n", key: s, ptr: &s, list: []Secret{s}, byKey: map[string]Secret{"k": s}, in: inner{s}}
	outputs := map[string]string{"ptr": fmt.Sprintf("%+v", &c)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%x", "%s", "%d", "%q"} {
		outputs[verb] = fmt.Sprintf(verb, c)
	}
	var logBuf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logBuf, nil), slog.NewJSONHandler(&logBuf, nil)} {
		slog.New(h).Info("config", "cfg", c, "list", []Secret{s}, "map", map[string]Secret{"k": s})
	}
	outputs["slog"] = logBuf.String()
	var tmpl bytes.Buffer
	if err := template.Must(template.New("").Parse("{{.}} {{.K}}")).Execute(&tmpl, struct{ K Secret }{s}); err != nil {
		t.Fatal(err)
	}
	outputs["text/template"] = tmpl.String()
	dec := strings.Trim(fmt.Sprint([]byte(raw)), "[]")                     // "104 117 110 …" (%v)
	goSyntax := strings.Trim(fmt.Sprintf("%#v", []byte(raw)), "[]uint8{}") // "0x68, 0x75, …" (%#v)
	for name, out := range outputs {
		for _, form := range []string{raw, fmt.Sprintf("%x", raw), dec, goSyntax} {
			if strings.Contains(out, form) {
				t.Errorf("%s leaks the secret (as %q): %s", name, form, out)
			}
		}
	}
	if err := gob.NewEncoder(io.Discard).Encode(struct{ K Secret }{s}); !errors.Is(err, ErrSecretEncode) {
		t.Errorf("gob encoding of a Secret: err = %v, want ErrSecretEncode", err)
	}
	var zero Secret
	if zero.Bytes() != nil || zero.Len() != 0 || !zero.IsZero() || !zero.Equal(Secret{}) || fmt.Sprint(zero) != Redacted {
		t.Error("the zero Secret is not an empty, redacted secret")
	}
	zero.Wipe()
}
