package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDevCommand(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"dev"}, exitOK, "all 8 steps passed"},
		{[]string{"dev", "--kill", "log-sink", "--step-timeout", "2s"}, exitFailure, "step 8 (logs) failed"},
		{[]string{"dev", "--kill", "kms", "--step-timeout", "2s"}, exitFailure, "step 6 (kms) failed"},
		{[]string{"dev", "--kill", "enclave", "--step-timeout", "2s"}, exitFailure, "step 1 (health) failed"},
		{[]string{"dev", "--kill", "vault"}, exitUsage, `cannot kill "vault"`},
		{[]string{"dev", "extra"}, exitUsage, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if all := stdout.String() + stderr.String(); !strings.Contains(all, tt.wantOut) {
				t.Fatalf("output lacks %q:\n%s", tt.wantOut, all)
			}
		})
	}
}
