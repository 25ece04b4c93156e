// Package awsid checks the shapes of AWS identifiers that the KMS client
// and its emulator both parse: region names and account IDs.
package awsid

// Region reports whether s looks like an AWS region name ("eu-west-1"):
// 4 to 32 lower-case letters, digits and hyphens.
func Region(s string) bool {
	if len(s) < 4 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Account reports whether s is a 12-digit AWS account ID.
func Account(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
