package enclaved

import (
	"context"
	"io"
	"io/fs"
)

// run is Run with the environment spelled out, as the tests use it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, sysfs fs.FS) int {
	return Run(ctx, args, Env{Stdout: stdout, Stderr: stderr, SysFS: sysfs})
}
