// Package cli implements the powercut command line. Each subcommand lives in its own file beside
// its test and is listed in commands (root.go); Run is the whole CLI as a function so that tests
// run it in-process.
//
// Exit codes (stable, documented in README.md):
//
//	0  no violation found (or the command succeeded)
//	1  violations found
//	2  usage error or tool error (bad input: do not retry)
//	3  retryable infrastructure failure (a loop device, mount or FUSE mount could not be set up,
//	   out of space): a batch engine should run it again
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/infra"
)

// Exit codes.
const (
	ExitOK         = 0
	ExitViolations = 1
	ExitError      = 2
	ExitRetryable  = 3
)

// ErrViolations is returned by a command that ran fine and found violations (exit 1).
var ErrViolations = errors.New("violations found")

// Env is what a subcommand gets besides its flags.
type Env struct {
	Ctx    context.Context
	Stdout io.Writer
	Stderr io.Writer
}

// commands is every top-level command, in one explicit list: what the CLI offers is read here,
// not assembled by init functions spread over the package.
func commands(env *Env) []*cobra.Command {
	return []*cobra.Command{
		newAuditCmd(env),
		newCleanupCmd(env),
		newDemoCmd(env),
		newExploreCmd(env),
		newExportCmd(env),
		newFS(env),
		newImportCmd(env),
		newLogCmd(env),
		newMark(env),
		newMergeCmd(env),
		newRecordCmd(env),
		newReplayCmd(env),
		newReportCmd(env),
		newReproCmd(env),
		newVerifyCmd(env),
	}
}

// usageError marks an error as a usage error.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// usagef returns a usage error (exit 2, with a hint to --help).
func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// NewRoot builds the command tree.
func NewRoot(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "powercut",
		Short: "Find what a power cut can do to your data",
		Long: `powercut records every block I/O a storage stack issues, generates the disk states a
crash could leave behind under the real durability rules of block devices, and checks each one.

Exit codes: 0 no violation found, 1 violations found, 2 usage or tool error (do not retry),
3 retryable infrastructure failure (loop device, mount or FUSE setup failed, out of space).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// pflag prints deprecation warnings to the command's output while parsing, before anything
	// runs: keep them on stderr (a --json reader must not see them), and give stdout back for
	// help and for what the command itself prints.
	root.SetOut(env.Stderr)
	root.SetErr(env.Stderr)
	help := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) { root.SetOut(env.Stdout); help(c, args) })
	root.PersistentPreRun = func(*cobra.Command, []string) { root.SetOut(env.Stdout) }
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(commands(env)...)
	// cobra adds these while executing; added here, Run's look-up before executing finds them
	// and every help test sees them.
	root.InitDefaultHelpCmd()
	root.SetOut(env.Stdout) // the completion scripts' writer is taken now
	root.InitDefaultCompletionCmd()
	root.SetOut(env.Stderr)
	typedArgs(root)
	withExitCodes(root)
	return root
}

// withExitCodes makes every command's help state its exit codes: the ones that find violations
// say so in their own words; every other command gets the common contract.
func withExitCodes(c *cobra.Command) {
	if !strings.Contains(c.Long, "Exit codes") {
		long := c.Long
		if long == "" {
			long = c.Short + "."
		}
		c.Long = long + "\n\nExit codes: 0 success, 2 usage or tool error (do not retry), 3 retryable infrastructure failure."
	}
	for _, sub := range c.Commands() {
		withExitCodes(sub)
	}
}

// typedArgs makes every argument-count error of the tree a usage error by type, so Run never
// has to recognise cobra's messages.
func typedArgs(c *cobra.Command) {
	if orig := c.Args; orig != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := orig(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		typedArgs(sub)
	}
}

// Run runs the CLI with args and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &Env{Ctx: ctx, Stdout: stdout, Stderr: stderr}
	root := NewRoot(env)
	root.SetArgs(args)
	// An unknown subcommand is found before anything runs: a usage error by construction.
	if c, _, err := root.Find(args); err != nil && !shellCompletion(args) {
		fmt.Fprintf(stderr, "powercut: %v\n", err)
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", c.CommandPath())
		return ExitError
	}
	cmd, err := root.ExecuteContextC(ctx)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrViolations):
		return ExitViolations
	}
	fmt.Fprintf(stderr, "powercut: %v\n", err)
	if infra.Retryable(err) {
		return ExitRetryable
	}
	var u usageError
	if errors.As(err, &u) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return ExitError
}

// shellCompletion reports whether args are a shell's completion request, which cobra answers
// with a hidden command it adds only while executing.
func shellCompletion(args []string) bool {
	return len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd)
}
