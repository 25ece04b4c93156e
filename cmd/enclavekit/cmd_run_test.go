package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("run.yaml", "enclaves:\n  - {name: a, eif: /a.eif, memory_mib: 256}\n  - {name: b, eif: /b.eif, memory_mib: 256, debug: true}\n")
	bad := write("bad.yaml", "enclaves:\n  - {name: a, eif: /a.eif, memory_mib: 256, cid: 17}\n  - {name: b, eif: /b.eif, memory_mib: 256}\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderr   string
		wantCIDs []uint32
	}{
		{"check", []string{"run", "--config", good, "--check"}, exitOK, `"log_sink": "vsock://any:5002"`, "", []uint32{16, 17}},
		{"check slot", []string{"run", "--config", good, "--check", "--slot", "3"}, exitOK, `"slot": 3`, "", []uint32{28, 29}},
		{"collision", []string{"run", "--config", bad, "--check"}, exitFailure, "", bad + ":3: enclaves[1].cid: CID 17 is also the CID of enclaves[0]", nil},
		{"slot out of range", []string{"run", "--config", good, "--check", "--slot", "16"}, exitFailure, "", "slot: 16 is out of range", nil},
		{"no config", []string{"run"}, exitUsage, "", "usage: enclavekit run", nil},
		{"missing file", []string{"run", "--config", filepath.Join(dir, "nope.yaml")}, exitFailure, "", "nope.yaml: cannot read the configuration", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if tc.wantCIDs != nil {
				var got struct {
					Enclaves []struct{ CID uint32 } `json:"enclaves"`
				}
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatal(err)
				}
				for i, e := range got.Enclaves {
					if e.CID != tc.wantCIDs[i] {
						t.Fatalf("CIDs %+v, want %v", got.Enclaves, tc.wantCIDs)
					}
				}
			}
		})
	}
}
