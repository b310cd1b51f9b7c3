package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/demo"
	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// demoResult is the --json output of demo.
type demoResult struct {
	Profile  string `json:"profile"`
	Bug      string `json:"bug"`
	Seed     uint64 `json:"seed"`
	Log      string `json:"log,omitempty"`
	Writes   int    `json:"writes"`
	Flushes  int    `json:"flushes"`
	Reopens  int    `json:"reopens"`
	FirstBad int64  `json:"states_to_first_violation,omitempty"`
	*explore.Report
	Replay map[string]string `json:"replay_commands,omitempty"`
}

func newDemoCmd(env *Env) *cobra.Command {
	var (
		ef             exploreFlags
		profile, bug   string
		keepLog        string
		outPath        string
		outErr         error
		asJSON         bool
		writes, blocks int
	)
	c := &cobra.Command{
		Use:   "demo",
		Short: "Crash-test a Crucible-style extent store in process (no root, no kernel features)",
		Long: `demo runs a seeded workload on a raw extent file in the design of Oxide Crucible's raw
backend (two context slots per block, an active-slot bitmap, a dirty flag), records every block
I/O in process, and checks every crash state the durability model allows with five oracles:
the extent opens; every active slot matches its block; every block holds a version between the
last one a flush acknowledged and the last one issued; the flush number never goes backwards;
opening twice gives the same result.

Profiles: crucible (the protocol as shipped: it relies on writes landing in order) and
hardened (flushes between context and data and before the clean metadata, a CRC over bitmap and
metadata, sector-aligned slots). --bug plants one bug in the extent:
  P1 skip the sync after setting the dirty flag
  P2 no bonus sync before rewriting a block whose last write is not synced
  P3 clear the dirty flag before the data is durable (hardened)
  P4 trust bitmap + metadata written in one multi-sector write, no CRC check (hardened)
  P5 acknowledge a flush without flushing the device

Exit codes: 0 no violation, 1 violations, 2 usage or tool error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := ef.options()
			if err != nil {
				return err
			}
			cfg, err := demoConfig(profile, bug, writes, blocks, ef.seed)
			if err != nil {
				return err
			}
			p, b := cfg.Profile, cfg.Bug
			if keepLog != "" {
				if keepLog, err = filepath.Abs(keepLog); err != nil {
					return fmt.Errorf("--keep-log: %w", err)
				}
			}
			out, errw := env.Stdout, env.Stderr
			printDemoHeader(map[bool]io.Writer{false: out, true: errw}[asJSON], cfg, opts)

			bar, finish := progress(errw)
			var logPath string
			shown := 0
			newGroup := groupSpotter()
			var outs *outputs
			onViolation := func(f explore.Found) {
				if outs != nil {
					outs.violation(f)
				}
				if asJSON || !newGroup(f) {
					return
				}
				finishLine(errw)
				if shown == 0 {
					fmt.Fprintln(out)
				}
				shown++
				printViolation(out, logPath, nil, f)
			}
			ro := demo.RunOptions{Config: cfg, Model: opts.Model, Strategy: opts.Strategy, K: opts.K, States: opts.States,
				Seed: ef.seed, Jobs: opts.Jobs, Discard: opts.Discard, FromMark: opts.FromMark, ToMark: opts.ToMark,
				LogPath: keepLog, Progress: bar, OnViolation: onViolation}
			// The violation printer needs the log path before the first violation: fix it now.
			if keepLog == "" {
				dir, err := os.MkdirTemp("", "powercut-demo-log-")
				if err != nil {
					return fmt.Errorf("demo: %w", err)
				}
				ro.LogPath = filepath.Join(dir, "demo.pclog")
			}
			logPath = ro.LogPath
			replay := func(id string) string { return replayCommand(logPath, nil, id) }
			ro.Extra = func(eo *explore.Options) {
				eo.Minimize, eo.MinimizeBudget, eo.MaxViolations, eo.Shard = opts.Minimize, opts.MinimizeBudget, opts.MaxViolations, opts.Shard
			}
			if outPath != "" || ef.resume != "" || ef.reportHTML != "" {
				ro.Extra = journalHook(&ef, ro.Extra, outPath, logPath, "demo "+p.String()+" "+b.String(), replay, &outs, &outErr)
			}
			o, err := demo.Run(env.Ctx, ro)
			finish()
			finishLine(errw)
			if outErr != nil && err == nil {
				err = outErr
			}
			if outs != nil && o != nil {
				var l *pclog.Log
				if ol, oerr := pclog.Open(logPath); oerr == nil {
					l = ol
					defer ol.Close()
				}
				if ferr := outs.finish(o.Report, l, fmt.Sprintf("powercut demo --profile %s --bug %s --model %s", p, b, opts.Model)); ferr != nil && err == nil {
					err = ferr
				}
			}
			bad := o != nil && o.Report != nil && len(o.Report.Violations) > 0
			if keepLog == "" && !bad {
				os.RemoveAll(filepath.Dir(ro.LogPath))
			}
			if o != nil {
				o.Cleanup(false)
			}
			if err != nil {
				return err
			}
			rep := o.Report
			if asJSON {
				if err := writeDemoJSON(out, p, b, cfg, o, logPath, bad, keepLog != ""); err != nil {
					return err
				}
			} else {
				printGroups(out, rep, replay)
				printDemoSummary(out, p, b, opts.Model, o, logPath, keepLog != "")
			}
			if bad {
				return ErrViolations
			}
			return nil
		},
	}
	ef.register(c, "reorder")
	c.Flags().Lookup("seed").Usage = "seed of the workload (and of --strategy sample)"
	c.Flags().StringVar(&profile, "profile", "hardened", "extent protocol: crucible or hardened")
	c.Flags().StringVar(&bug, "bug", "", "plant a bug: P1, P2, P3, P4 or P5")
	c.Flags().StringVar(&keepLog, "keep-log", "", "keep the recording at this path (kept in a temporary directory anyway when violations are found)")
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable report on stdout")
	c.Flags().StringVar(&outPath, "out", "", "results file (JSON lines, synced per checked state): --resume continues it, 'powercut merge' joins shards, 'powercut report' renders it")
	c.Flags().IntVar(&writes, "writes", demo.DefaultConfig().Writes, "number of block writes in the workload")
	c.Flags().IntVar(&blocks, "blocks", int(demo.DefaultConfig().Blocks), "number of blocks in the extent")
	return c
}

// printDemoHeader says what the demo is about to do.
func printDemoHeader(w io.Writer, cfg demo.Config, opts explore.Options) {
	fmt.Fprintf(w, "target:   a Crucible-style raw extent, %d blocks of 512 bytes, profile %s, %s\n", cfg.Blocks, cfg.Profile, cfg.Bug.Describe())
	fmt.Fprintf(w, "workload: %d writes (several versions per block, rewrites between flushes), a flush every 1-%d writes, reopens; seed %d\n",
		cfg.Writes, cfg.FlushEvery, cfg.Seed)
	fmt.Fprintf(w, "model:    %s, strategy %s%s\n", opts.Model, opts.Strategy, statesNote(opts.States))

}

// demoConfig checks the demo's own flags and returns the workload configuration.
func demoConfig(profile, bug string, writes, blocks int, seed uint64) (demo.Config, error) {
	cfg := demo.DefaultConfig()
	p, err := extent.ParseProfile(profile)
	if err != nil {
		return cfg, usagef("--profile: %v", err)
	}
	b, err := extent.ParseBug(bug)
	if err != nil {
		return cfg, usagef("--bug: %v", err)
	}
	if !b.Applies(p) {
		return cfg, usagef("--bug %s: the %s profile has no such code path (%s is a hardened-only safeguard)", b, p, b)
	}
	if err := atLeast(flagMin{"writes", int64(writes), 1}, flagMin{"blocks", int64(blocks), 1}); err != nil {
		return cfg, err
	}
	cfg.Profile, cfg.Bug, cfg.Seed = p, b, seed
	cfg.Writes, cfg.Blocks = writes, int64(blocks)
	return cfg, nil
}

// journalHook wraps extra so that, once the recording exists, the results journal (--out,
// --resume, --report) is opened with the recording's size and hooked into the options.
func journalHook(ef *exploreFlags, extra func(*explore.Options), outPath, logPath, check string, replay func(string) string, outs **outputs, outErr *error) func(*explore.Options) {
	return func(eo *explore.Options) {
		extra(eo)
		n := 0
		if l, err := pclog.Open(logPath); err == nil {
			n = len(l.Entries)
			l.Close()
		}
		o, err := ef.openOutputs(outPath, newRunInfo(logPath, n, *eo, check), eo, replay)
		if err != nil {
			*outErr = err
			return
		}
		*outs = o
	}
}

// writeDemoJSON writes the --json result of a demo run.
func writeDemoJSON(w io.Writer, p extent.Profile, b extent.Bug, cfg demo.Config, o *demo.Outcome, logPath string, bad, kept bool) error {
	rep := o.Report
	res := demoResult{Profile: p.String(), Bug: b.String(), Seed: cfg.Seed, Writes: o.Recording.Writes,
		Flushes: o.Recording.Flushes, Reopens: o.Recording.Reopens, FirstBad: o.FirstBad, Report: rep}
	if bad {
		res.Log = logPath
		res.Replay = map[string]string{}
		for _, f := range rep.Violations {
			res.Replay[f.StateID] = replayCommand(logPath, nil, f.StateID)
		}
	} else if kept {
		res.Log = logPath
	}
	return writeJSON(w, res)
}

func statesNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", at most %d states per crash point", n)
}

// printDemoSummary ends a demo run with what was done and what it means, in plain words.
func printDemoSummary(w io.Writer, p extent.Profile, b extent.Bug, m model.Model, o *demo.Outcome, logPath string, kept bool) {
	rep, r := o.Report, o.Recording
	fmt.Fprintln(w)
	fmt.Fprintf(w, "recorded %d writes, %d flushes, %d reopens (%d block writes to the device, %d syncs, %d bonus syncs, %d defragmentations)\n",
		r.Writes, r.Flushes, r.Reopens, r.Stats.Writes, r.Stats.Syncs, r.Stats.BonusSyncs, r.Stats.Defrags)
	fmt.Fprintf(w, "explored %d crash points, %d states, %d distinct images checked in %.1fs\n", rep.CrashPoints, rep.States, rep.Checked, rep.Seconds)
	if rep.Truncated > 0 {
		fmt.Fprintf(w, "note: the per-point state cap cut the enumeration short at %d crash points\n", rep.Truncated)
	}
	what := fmt.Sprintf("the %s extent", p)
	if b != extent.BugNone {
		what += fmt.Sprintf(" with bug %s (%s)", b, b.Describe())
	}
	if len(rep.Violations) == 0 {
		fmt.Fprintf(w, "\nNo violation: %s survived every crash state the %s model allows.\n", what, m)
		if kept {
			fmt.Fprintf(w, "recording kept at %s\n", logPath)
		}
		return
	}
	oracles := map[string]int{}
	var names []string
	for _, f := range rep.Violations {
		if oracles[f.Oracle] == 0 {
			names = append(names, f.Oracle)
		}
		oracles[f.Oracle]++
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s ×%d", n, oracles[n]))
	}
	fmt.Fprintf(w, "\n%d violations in %d crash states (%s): a power cut can break %s under the %s model.\n",
		len(rep.Violations), rep.BadStates, strings.Join(parts, ", "), what, m)
	if o.FirstBad > 0 {
		fmt.Fprintf(w, "the first bad state turned up after %d states were checked.\n", o.FirstBad)
	}
	fmt.Fprintf(w, "recording kept at %s; rebuild any state above with its `powercut replay` line.\n", logPath)
}
