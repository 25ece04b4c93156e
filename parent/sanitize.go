package parent

import "github.com/enclavekit/enclavekit/parent/internal/sanitize"

// Sanitize returns s with control characters (C0, DEL, C1), Unicode format
// characters (bidirectional overrides, zero-width characters), line and
// paragraph separators (U+2028, U+2029) and invalid UTF-8 removed, cut to
// at most max bytes at a rune boundary; a cut string ends in "…" (counted
// in max). Text from an enclave passes through it before it reaches a log
// or a terminal (the client does so with remote error messages, the log
// sink with every record), so it cannot forge lines or hide text in a
// terminal.
func Sanitize(s string, max int) string { return sanitize.Text(s, max) }
