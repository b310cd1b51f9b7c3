package cli

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/control"
)

// newMark is `powercut mark NAME`: it labels the current point of a running recording, so a
// workload script marks what it has been promised (e.g. after fsync returned) with one line.
func newMark(env *Env) *cobra.Command {
	var sock string
	c := &cobra.Command{
		Use:   "mark [--control SOCK] NAME",
		Short: "Insert a named mark into a running recording (via its control socket)",
		Long: `Ask a running recorder (powercut record nbd|fuse --control SOCK) to record a MARK named NAME
at the current point of its global order, and wait until it is in the log. The socket defaults to
$POWERCUT_CONTROL, so a workload script can simply call 'powercut mark NAME'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if name == "" || strings.ContainsAny(name, "\n\r") {
				return usagef("mark name must be non-empty and on one line")
			}
			if sock == "" {
				sock = os.Getenv(control.EnvSocket)
			}
			if sock == "" {
				return usagef("no control socket: pass --control SOCK or set %s", control.EnvSocket)
			}
			return control.MarkContext(env.Ctx, sock, name)
		},
	}
	c.Flags().StringVar(&sock, "control", "", "the recorder's control socket (default $"+control.EnvSocket+")")
	return c
}
