// Package testutil holds helpers that tests in several packages, and the
// development harness, share. No production package imports it.
package testutil
