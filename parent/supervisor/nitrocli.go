package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// EnclaveInfo is what nitro-cli prints for one enclave: the answer of
// run-enclave and each element of describe-enclaves' array. The JSON keys
// are nitro-cli's own, as defined by the EnclaveRunInfo and
// EnclaveDescribeInfo structs of aws/aws-nitro-enclaves-cli
// (src/common/json_output.rs) and shown in the describe-enclaves example of
// its documentation; keys this struct lacks (Measurements, Metadata, …)
// are ignored.
type EnclaveInfo struct {
	EnclaveName  string `json:"EnclaveName,omitempty"`
	EnclaveID    string `json:"EnclaveID"`
	ProcessID    int    `json:"ProcessID"`
	EnclaveCID   uint64 `json:"EnclaveCID"`
	NumberOfCPUs int    `json:"NumberOfCPUs"`
	CPUIDs       []int  `json:"CPUIDs,omitempty"`
	MemoryMiB    uint64 `json:"MemoryMiB"`
	// State is "RUNNING" while the enclave runs (describe-enclaves only).
	State string `json:"State,omitempty"`
	// Flags is "NONE" or "DEBUG_MODE" (describe-enclaves only).
	Flags string `json:"Flags,omitempty"`
}

// TerminateInfo is what terminate-enclave prints (EnclaveTerminateInfo in
// the same source file).
type TerminateInfo struct {
	EnclaveName string `json:"EnclaveName,omitempty"`
	EnclaveID   string `json:"EnclaveID"`
	Terminated  bool   `json:"Terminated"`
}

// StateRunning is describe-enclaves' State of a running enclave.
const StateRunning = "RUNNING"

// ExitInfo is how one nitro-cli invocation ended, kept for the run log.
type ExitInfo struct {
	Args   string // the nitro-cli subcommand and arguments
	Code   int    // exit status; -1 if it did not run or was killed
	Stderr string // the end of its standard error
	Err    string // why it failed to run, if it did
}

func (x ExitInfo) String() string {
	s := fmt.Sprintf("nitro-cli %s: exit %d", x.Args, x.Code)
	if x.Err != "" {
		s += " (" + x.Err + ")"
	}
	if x.Stderr != "" {
		s += ": " + strconv.Quote(x.Stderr)
	}
	return s
}

// maxStderr bounds the standard error kept from one nitro-cli run.
const maxStderr = 2048

// launcher starts, lists and stops enclaves; nitroCLI is the real one.
type launcher interface {
	run(ctx context.Context, e *Enclave) (EnclaveInfo, ExitInfo, error)
	describe(ctx context.Context) ([]EnclaveInfo, ExitInfo, error)
	terminate(ctx context.Context, id string) ExitInfo
}

// nitroCLI runs the nitro-cli command.
type nitroCLI struct{ cmd []string }

func (n nitroCLI) exec(ctx context.Context, args ...string) ([]byte, ExitInfo, error) {
	x := ExitInfo{Args: strings.Join(args, " "), Code: -1}
	c := exec.CommandContext(ctx, n.cmd[0], append(n.cmd[1:len(n.cmd):len(n.cmd)], args...)...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	x.Stderr = tail(stderr.String(), maxStderr)
	if c.ProcessState != nil {
		x.Code = c.ProcessState.ExitCode()
	}
	if err != nil {
		x.Err = err.Error()
		return nil, x, fmt.Errorf("supervisor: %s", x)
	}
	return stdout.Bytes(), x, nil
}

func (n nitroCLI) run(ctx context.Context, e *Enclave) (EnclaveInfo, ExitInfo, error) {
	args := []string{"run-enclave",
		"--eif-path", e.EIF,
		"--cpu-count", strconv.Itoa(e.CPUs),
		"--memory", strconv.Itoa(e.MemoryMiB),
		"--enclave-cid", strconv.FormatUint(uint64(e.CID), 10),
		"--enclave-name", e.Name,
	}
	if e.Debug {
		args = append(args, "--debug-mode")
	}
	out, x, err := n.exec(ctx, args...)
	if err != nil {
		return EnclaveInfo{}, x, err
	}
	var info EnclaveInfo
	if err := decodeJSON(out, &info); err != nil || info.EnclaveID == "" {
		x.Err = fmt.Sprintf("unexpected output %q", tail(string(out), 256))
		return EnclaveInfo{}, x, fmt.Errorf("supervisor: nitro-cli run-enclave printed no enclave: %s", x)
	}
	return info, x, nil
}

func (n nitroCLI) describe(ctx context.Context) ([]EnclaveInfo, ExitInfo, error) {
	out, x, err := n.exec(ctx, "describe-enclaves")
	if err != nil {
		return nil, x, err
	}
	var list []EnclaveInfo
	if err := decodeJSON(out, &list); err != nil {
		x.Err = fmt.Sprintf("unexpected output %q", tail(string(out), 256))
		return nil, x, fmt.Errorf("supervisor: %s", x)
	}
	return list, x, nil
}

func (n nitroCLI) terminate(ctx context.Context, id string) ExitInfo {
	out, x, err := n.exec(ctx, "terminate-enclave", "--enclave-id", id)
	if err != nil {
		return x
	}
	var t TerminateInfo
	if err := decodeJSON(out, &t); err != nil || !t.Terminated {
		x.Err = fmt.Sprintf("did not confirm termination: %q", tail(string(out), 256))
	}
	return x
}

// decodeJSON decodes the JSON value in out, skipping any text nitro-cli
// printed before it.
func decodeJSON(out []byte, v any) error {
	i := bytes.IndexAny(out, "[{")
	if i < 0 {
		return errors.New("no JSON in the output")
	}
	return json.NewDecoder(bytes.NewReader(out[i:])).Decode(v)
}

// tail is the last max bytes of s, trimmed.
func tail(s string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	return s
}
