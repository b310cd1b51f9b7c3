package cli

import "github.com/spf13/cobra"

// recordFrontends are the subcommands of `powercut record` (one per frontend: fuse, nbd, ...).
// Each frontend's file registers itself with registerRecord from its init, so frontends written
// in parallel never edit a shared file.
var recordFrontends = map[string]cmdFactory{}

// registerRecord adds `powercut record NAME`.
func registerRecord(name string, f cmdFactory) {
	if _, dup := recordFrontends[name]; dup {
		panic("cli: duplicate record frontend " + name)
	}
	recordFrontends[name] = f
}

func init() {
	register("record", func(env *Env) *cobra.Command {
		c := &cobra.Command{
			Use:   "record fuse|nbd [flags]",
			Short: "Record every block operation a storage stack issues into a .pclog",
			Args:  cobra.ArbitraryArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usagef("unknown frontend %q (want fuse or nbd)", args[0])
				}
				return usagef("which frontend? powercut record fuse|nbd")
			},
		}
		addCommands(c, env, recordFrontends)
		return c
	})
}
