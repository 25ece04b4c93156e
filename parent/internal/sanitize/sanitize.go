// Package sanitize cleans text that came from an enclave before the
// parent prints or logs it: the log sink's records (parent/logsink) and
// the messages of remote errors (parent.Client). parent.Sanitize exports
// it to the parent's commands.
package sanitize

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text returns s with control characters (C0, DEL, C1), Unicode format
// characters (bidirectional overrides, zero-width characters), line and
// paragraph separators (U+2028, U+2029) and invalid UTF-8 removed, cut to
// at most max bytes at a rune boundary; a cut string ends in "…" (counted
// in max). Text from an enclave passes through it before it reaches a
// log, so it cannot forge lines or hide text in a terminal.
func Text(s string, max int) string {
	clean := true
	for _, r := range s {
		if dropRune(r) {
			clean = false
			break
		}
	}
	if clean && len(s) <= max {
		return s
	}
	const ellipsis = "…"
	var b strings.Builder
	b.Grow(min(len(s), max))
	for _, r := range s {
		if dropRune(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			return cut(b.String(), max, ellipsis)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dropRune reports the runes Text removes: invalid UTF-8, controls,
// format characters, and the Unicode line and paragraph separators
// (U+2028, U+2029), which some viewers and JavaScript treat as line breaks.
func dropRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) ||
		unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// cut shortens s so that s+suffix fits in max bytes, at a rune boundary.
func cut(s string, max int, suffix string) string {
	if max < len(suffix) {
		return ""
	}
	n := max - len(suffix)
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:min(n, len(s))] + suffix
}
