package build

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Flags are the go build flags of a reproducible build.
var Flags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid="}

// Env returns base with the variables of a reproducible build set:
// CGO_ENABLED=0, SOURCE_DATE_EPOCH, and an empty GOFLAGS so that the
// caller's environment cannot add flags. goos may be "" to keep the host's.
func Env(base []string, sourceDateEpoch int64, goos, goarch string) []string {
	env := make([]string, 0, len(base)+5)
	drop := map[string]bool{"CGO_ENABLED": true, "SOURCE_DATE_EPOCH": true, "GOFLAGS": true}
	if goos != "" {
		drop["GOOS"] = true
	}
	if goarch != "" {
		drop["GOARCH"] = true
	}
	for _, kv := range base {
		if i := strings.IndexByte(kv, '='); i > 0 && drop[kv[:i]] {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CGO_ENABLED=0", "SOURCE_DATE_EPOCH="+strconv.FormatInt(sourceDateEpoch, 10), "GOFLAGS=")
	if goos != "" {
		env = append(env, "GOOS="+goos)
	}
	if goarch != "" {
		env = append(env, "GOARCH="+goarch)
	}
	return env
}

// Command describes one reproducible go build.
type Command struct {
	Go              string   // go binary; "" means "go" from PATH
	Dir             string   // directory to run in (module root)
	Package         string   // package to build, e.g. "./cmd/enclaved"
	Output          string   // output file
	SourceDateEpoch int64    // fixed timestamp
	GOOS, GOARCH    string   // "" keeps the host's
	ExtraEnv        []string // appended last, e.g. GOCACHE=...
}

// Validate reports whether the command is complete.
func (c *Command) Validate() error {
	if c.Package == "" || c.Output == "" {
		return fmt.Errorf("build: Command needs Package and Output (got %q, %q)", c.Package, c.Output)
	}
	if c.SourceDateEpoch < 0 {
		return fmt.Errorf("build: SourceDateEpoch %d is negative", c.SourceDateEpoch)
	}
	return nil
}

// Run builds the package. Errors include the go command's output.
func (c *Command) Run(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	goBin := c.Go
	if goBin == "" {
		goBin = "go"
	}
	args := append([]string{"build"}, Flags...)
	args = append(args, "-o", c.Output, c.Package)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = c.Dir
	cmd.Env = append(Env(os.Environ(), c.SourceDateEpoch, c.GOOS, c.GOARCH), c.ExtraEnv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build: %s %v: %w\n%s", goBin, args, err, out.Bytes())
	}
	return nil
}
