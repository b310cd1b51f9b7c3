// Package cli implements the powercut command line. Each subcommand lives in its own file beside
// its test and registers itself with register; Run is the whole CLI as a function so that tests
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
	"sort"
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

type cmdFactory func(env *Env) *cobra.Command

var factories = map[string]cmdFactory{}

// register adds a top-level subcommand; name keeps the order deterministic.
func register(name string, f cmdFactory) {
	if _, dup := factories[name]; dup {
		panic("cli: duplicate command " + name)
	}
	factories[name] = f
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
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	addCommands(root, env, factories)
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

// addCommands adds the registered subcommands to parent in name order.
func addCommands(parent *cobra.Command, env *Env, m map[string]cmdFactory) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parent.AddCommand(m[n](env))
	}
}

// Run runs the CLI with args and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &Env{Ctx: ctx, Stdout: stdout, Stderr: stderr}
	root := NewRoot(env)
	root.SetArgs(args)
	// An unknown subcommand is found before anything runs: a usage error by construction.
	if c, _, err := root.Find(args); err != nil {
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
