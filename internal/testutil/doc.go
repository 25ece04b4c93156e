// Package testutil holds helpers that tests in several packages share.
// Only _test.go files import it.
package testutil
