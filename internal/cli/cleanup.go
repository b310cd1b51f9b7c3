package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/leftovers"
)

// newCleanupCmd is `powercut cleanup`: remove on demand what dead powercut processes left.
func newCleanupCmd(env *Env) *cobra.Command {
	var dryRun, asJSON bool
	c := &cobra.Command{
		Use:   "cleanup [--dry-run] [--json]",
		Short: "Remove what killed powercut runs left behind (mounts, loop devices, FUSE mounts, temp directories)",
		Long: `A powercut killed by SIGKILL or the OOM killer cannot release what it created. cleanup finds
what dead powercut processes left and removes it: file systems mounted from crash states, loop
devices backed by its scratch or recording files, FUSE mounts that answer "Transport endpoint is
not connected", processes of its checks still running, and its temporary directories
(TMPDIR/powercut-<pid>-*). Every powercut run holds a lock in its own directory while it lives:
the resources of a running powercut, and anything not made by powercut, are never touched.
powercut fs and powercut explore --check/--fsck run the same sweep when they start.

Exit codes: 0 done (also when nothing was left), 2 something could not be removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			acts, err := leftovers.Sweep(dryRun)
			if err != nil {
				return err
			}
			failed := 0
			for _, a := range acts {
				if a.Err != "" {
					failed++
				}
			}
			if asJSON {
				if acts == nil {
					acts = []leftovers.Action{}
				}
				if err := writeJSON(env.Stdout, map[string]any{"dry_run": dryRun, "removed": acts}); err != nil {
					return err
				}
			} else {
				prefix := ""
				if dryRun {
					prefix = "would have "
				}
				for _, a := range acts {
					fmt.Fprintln(env.Stdout, prefix+a.String())
				}
				if len(acts) == 0 {
					fmt.Fprintln(env.Stdout, "nothing left behind by dead powercut processes")
				}
			}
			if failed > 0 {
				return fmt.Errorf("cleanup: %d of %d leftovers could not be removed", failed, len(acts))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable list on stdout")
	return c
}

// sweepLeftovers removes what dead powercut processes left, before a command that creates such
// resources itself, and says so on stderr, one line per thing.
func sweepLeftovers(env *Env) {
	acts, err := leftovers.Sweep(false)
	if err != nil {
		fmt.Fprintf(env.Stderr, "powercut: looking for leftovers of killed runs: %v\n", err)
		return
	}
	for _, a := range acts {
		fmt.Fprintf(env.Stderr, "powercut: cleanup: %s\n", a)
	}
}

// releaseOwn removes this process's own directory when a command ends (normally or
// interrupted) and reports anything its releases had missed.
func releaseOwn(env *Env) {
	for _, a := range leftovers.Close() {
		fmt.Fprintf(env.Stderr, "powercut: released at exit: %s\n", a)
	}
}
