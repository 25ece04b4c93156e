package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestSoakCommand(t *testing.T) {
	short := []string{"soak", "--duration", "1s", "--progress", "1s", "--concurrency", "4", "--pool", "2",
		"--max-body", "4096", "--streams", "2", "--max-stream-bytes", "65536", "--slowloris", "10",
		"--tricklers", "10", "--good-p99", "1m"}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"short run passes", short, exitOK, "\nPASS\n"},
		{"too much concurrency", []string{"soak", "--concurrency", "1001"}, exitUsage, "Concurrency is 1001"},
		{"zero duration", []string{"soak", "--duration", "0s"}, exitUsage, "--duration must be positive"},
		{"zero streams", []string{"soak", "--streams", "0"}, exitUsage, "--streams must be positive"},
		{"extra argument", []string{"soak", "extra"}, exitUsage, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
