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
			Use:   "record",
			Short: "Record every block operation a storage stack issues into a .pclog",
		}
		addCommands(c, env, recordFrontends)
		return c
	})
}
