package supervisor

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/internal/enclaved"
)

// The test binary doubles as a fake nitro-cli ("fake-nitro-cli STATEDIR
// SUBCOMMAND ...") and as the fake enclave it starts ("fake-enclave ...").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "fake-nitro-cli":
			os.Exit(fakeNitroCLI(os.Args[2:], os.Stdout, os.Stderr))
		case "fake-enclave":
			os.Exit(fakeEnclave(os.Args[2:]))
		}
	}
	goleak.VerifyTestMain(m)
}

// fakeImage is what a fake EIF file holds: where the fake enclave listens
// and sends its logs.
type fakeImage struct {
	Listen  string `json:"listen"`
	LogSink string `json:"log_sink"`
	// Fail makes run-enclave fail as nitro-cli does when, e.g., the
	// hugepages are short.
	Fail bool `json:"fail"`
}

func writeFakeEIF(t *testing.T, path string, img fakeImage) {
	t.Helper()
	b, _ := json.Marshal(img)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeNitroCLI answers run-enclave, describe-enclaves and
// terminate-enclave like nitro-cli, in its JSON shape (see EnclaveInfo).
// The state of each enclave is a file STATEDIR/ID.json; the enclave is a
// process of its own that outlives this command, as with nitro-cli.
func fakeNitroCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, "fake nitro-cli: usage: STATEDIR SUBCOMMAND ...")
		return 2
	}
	dir, sub, rest := args[0], args[1], args[2:]
	fail := func(code string, format string, a ...any) int {
		// nitro-cli prints "[ Exx ] message" on errors.
		fmt.Fprintf(stderr, "[ %s ] "+format+"\n", append([]any{code}, a...)...)
		return 1
	}
	switch sub {
	case "run-enclave":
		fs := flag.NewFlagSet("run-enclave", flag.ContinueOnError)
		eifPath := fs.String("eif-path", "", "")
		cpus := fs.Int("cpu-count", 0, "")
		mem := fs.Uint64("memory", 0, "")
		cid := fs.Uint64("enclave-cid", 0, "")
		name := fs.String("enclave-name", "", "")
		debug := fs.Bool("debug-mode", false, "")
		if err := fs.Parse(rest); err != nil || *eifPath == "" || *cpus == 0 || *mem == 0 {
			return fail("E00", "bad arguments %q", rest)
		}
		b, err := os.ReadFile(*eifPath)
		var img fakeImage
		if err == nil {
			err = json.Unmarshal(b, &img)
		}
		if err != nil {
			return fail("E35", "EIF file parsing error: %v", err)
		}
		if img.Fail {
			return fail("E27", "Insufficient hugepages available")
		}
		id := fmt.Sprintf("i-0fake%012d-enc%016x", os.Getpid(), time.Now().UnixNano())
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		if err != nil {
			return fail("E00", "%v", err)
		}
		defer logf.Close()
		cmd := exec.Command(os.Args[0], "fake-enclave", img.Listen, img.LogSink, *name)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return fail("E00", "starting the enclave: %v", err)
		}
		pid := cmd.Process.Pid
		cmd.Process.Release()
		flags := "NONE"
		if *debug {
			flags = "DEBUG_MODE"
		}
		info := EnclaveInfo{EnclaveName: *name, EnclaveID: id, ProcessID: pid, EnclaveCID: *cid,
			NumberOfCPUs: *cpus, CPUIDs: []int{1, 3}[:min(*cpus, 2)], MemoryMiB: *mem, State: StateRunning, Flags: flags}
		st, _ := json.Marshal(info)
		if err := os.WriteFile(filepath.Join(dir, id+".json"), st, 0o600); err != nil {
			return fail("E00", "%v", err)
		}
		fmt.Fprintf(stderr, "Start allocating memory...\nStarted enclave with enclave-cid: %d, memory: %d MiB, cpu-ids: %v\n", *cid, *mem, info.CPUIDs)
		info.State, info.Flags = "", "" // run-enclave prints neither
		out, _ := json.MarshalIndent(info, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	case "describe-enclaves":
		list := []EnclaveInfo{}
		for _, info := range fakeEnclaves(dir) {
			list = append(list, info)
		}
		out, _ := json.MarshalIndent(list, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	case "terminate-enclave":
		if len(rest) != 2 || rest[0] != "--enclave-id" {
			return fail("E00", "bad arguments %q", rest)
		}
		info, ok := fakeEnclaves(dir)[rest[1]]
		if !ok {
			return fail("E16", "enclave %s not found", rest[1])
		}
		syscall.Kill(info.ProcessID, syscall.SIGTERM)
		for i := 0; alive(info.ProcessID); i++ {
			if i == 500 {
				syscall.Kill(info.ProcessID, syscall.SIGKILL)
			}
			time.Sleep(10 * time.Millisecond)
		}
		os.Remove(filepath.Join(dir, info.EnclaveID+".json"))
		out, _ := json.MarshalIndent(TerminateInfo{EnclaveName: info.EnclaveName, EnclaveID: info.EnclaveID, Terminated: true}, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	return fail("E00", "unknown subcommand %q", sub)
}

// fakeEnclaves reads the state files, dropping those whose process ended
// (nitro-cli forgets an enclave whose process is gone).
func fakeEnclaves(dir string) map[string]EnclaveInfo {
	out := map[string]EnclaveInfo{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		var info EnclaveInfo
		if err != nil || json.Unmarshal(b, &info) != nil {
			continue
		}
		if !alive(info.ProcessID) {
			os.Remove(f)
			continue
		}
		out[info.EnclaveID] = info
	}
	return out
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// fakeEnclave runs the reference enclave server program on loopback until
// SIGTERM: fake-enclave LISTEN LOGSINK NAME.
func fakeEnclave(args []string) int {
	if len(args) != 3 {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	// Wait until the sink listens, so the first records are not dropped.
	for range 200 {
		c, err := net.Dial("tcp", strings.TrimPrefix(args[1], "tcp://"))
		if err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return enclaved.Run(ctx, []string{"--dev", "--nsm", "emulated", "--listen", args[0], "--log-sink", args[1], "--drain-timeout", "100ms"}, enclaved.Env{
		Stdout: os.Stdout, Stderr: os.Stderr, SysFS: fstest.MapFS{},
		Handlers: func(log *slog.Logger) map[string]enclave.Handler {
			log.Info("fake enclave booted", "name", args[2], "pid", os.Getpid())
			return nil
		},
	})
}
