// Command powercut records the block I/O of a storage stack and checks every disk state a power
// cut could leave behind. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/powercut/powercut/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
