package sanitize

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"a\nb\rc\td", 10, "abcd"},
		{"\x1b[1mbold\x1b[0m", 20, "[1mbold[0m"},
		{"del\x7f c1\u0085", 20, "del c1"},
		{"bidi\u202eevil\u2066", 20, "bidievil"},
		{"zero\u200bwidth", 20, "zerowidth"},
		{"line\u2028sep\u2029para", 20, "lineseppara"},
		{"bad\xffutf8", 20, "badutf8"},
		{"0123456789", 5, "01…"},
		{"ééééé", 6, "é…"},
		{"abc", 2, ""},
		{"", 0, ""},
		{"日本語", 9, "日本語"},
	} {
		got := Text(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("Text(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if len(got) > tc.max {
			t.Errorf("Text(%q, %d) is %d bytes", tc.in, tc.max, len(got))
		}
	}
}

// FuzzText: whatever an enclave sends, the result fits in max bytes, is
// valid UTF-8 and holds no character Text promises to remove; text that
// needed no change comes back as it was.
func FuzzText(f *testing.F) {
	f.Add("plain", 10)
	f.Add("line\nforged\x1b[0m", 64)
	f.Add("ééééé", 6)
	f.Add("bad\xffutf8\u202e", 3)
	f.Add("\ufffd", 8)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max & 0xffff
		got := Text(s, max)
		if len(got) > max {
			t.Fatalf("Text(%q, %d) is %d bytes", s, max, len(got))
		}
		if !utf8.ValidString(got) {
			t.Fatalf("Text(%q, %d) = %q: invalid UTF-8", s, max, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
				t.Fatalf("Text(%q, %d) = %q keeps %U", s, max, got, r)
			}
		}
		if got != s && len(s) <= max && utf8.ValidString(s) {
			clean := true
			for _, r := range s {
				if r == utf8.RuneError || unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
					clean = false
				}
			}
			if clean {
				t.Fatalf("Text(%q, %d) = %q changed clean text", s, max, got)
			}
		}
	})
}
