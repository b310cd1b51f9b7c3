package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/pclog"
)

func newReportCmd(env *Env) *cobra.Command {
	var out, logPath string
	var bases []string
	c := &cobra.Command{
		Use:   "report R.jsonl --out report.html [--log F.pclog]",
		Short: "Render a results file as one self-contained HTML report",
		Long: `Render the results file of an exploration (the --out of explore, fs or demo) as one HTML file
that needs no network: a summary table, one block per group of violations with its minimal state,
the sentence that explains it, its replay command and the checker's output, and an I/O timeline
per device on the recording's global order with the group's deviating operations and crash point
highlighted. The recording is the one the results name (--log overrides it, e.g. after a move).

Exit codes: 0 the report was written, 2 usage or tool error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			res, err := readResults(args[0])
			if err != nil {
				return err
			}
			if res.Summary == nil {
				return fmt.Errorf("%s has no summary: the run did not finish (continue it with --resume %s)", args[0], args[0])
			}
			if logPath == "" {
				logPath = res.Run.Log
			}
			l, err := pclog.Open(logPath)
			if err != nil {
				return fmt.Errorf("the recording of %s: %w (give --log)", args[0], err)
			}
			defer l.Close()
			replay := func(id string) string { return replayCommand(logPath, bases, id) }
			if err := writeReport(out, fmt.Sprintf("%s, model %s, check %s", logPath, res.Run.Model, res.Run.Check), l, res.Summary, replay); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "wrote %s (%d violations in %d groups)\n", out, len(res.Summary.Violations), len(res.Summary.Groups))
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "the HTML file to write")
	c.Flags().StringVar(&logPath, "log", "", "the recording (default: the one the results name)")
	c.Flags().StringArrayVar(&bases, "base", nil, "base image(s) named in the replay commands")
	return c
}
