package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/enclavekit/enclavekit/internal/enclaved"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := enclaved.Run(ctx, os.Args[1:], enclaved.Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
