package cli

import "github.com/spf13/cobra"

// newRecordCmd is `powercut record`, with one subcommand per frontend.
func newRecordCmd(env *Env) *cobra.Command {
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
	c.AddCommand(newRecordFuse(env), newRecordNBD(env))
	return c
}
