package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/checkers"
	"github.com/powercut/powercut/internal/scratch"
	"github.com/powercut/powercut/internal/verify"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// exploreFlags are shared by every command that explores (explore, demo, fs).
type exploreFlags struct {
	model, strategy, discard string
	k, states, jobs          int
	seed                     uint64
	fromMark, toMark         string

	minimize           string
	minimizeBudget     int
	maxViolations      int
	failFast           bool
	shard              string
	shardCount         int
	shardFrom          string // where the shard came from (the flag, a batch engine's variables)
	resume, reportHTML string
}

func (f *exploreFlags) register(c *cobra.Command, defModel string) {
	c.Flags().StringVar(&f.model, "model", defModel, "durability model: prefix, flush, reorder, torn, coalesce")
	c.Flags().StringVar(&f.strategy, "strategy", "drop-k", "state enumeration: exhaustive, drop-k, keep-k, sample")
	c.Flags().IntVar(&f.k, "k", 2, "k for drop-k / keep-k")
	c.Flags().IntVar(&f.states, "states", 0, "at most N states per crash point (0: all the strategy gives; sample: 64)")
	c.Flags().Uint64Var(&f.seed, "seed", 1, "seed for --strategy sample")
	c.Flags().StringVar(&f.discard, "discard", "either", "what a DISCARD leaves: zero, keep, either")
	c.Flags().IntVar(&f.jobs, "jobs", 1, "check N states in parallel (results keep a deterministic order)")
	c.Flags().StringVar(&f.fromMark, "from-mark", "", "only crash points after this mark")
	c.Flags().StringVar(&f.toMark, "to-mark", "", "only crash points up to and including this mark")
	c.Flags().StringVar(&f.minimize, "minimize", "auto", "minimise violations to the deviations that matter: auto (the first of each group when the checker is in process), off, first, each")
	c.Flags().IntVar(&f.minimizeBudget, "minimize-budget", 64, "at most N checks spent minimising each violation")
	c.Flags().IntVar(&f.maxViolations, "max-violations", 0, "stop after N violations (0: no limit)")
	c.Flags().BoolVar(&f.failFast, "fail-fast", false, "stop at the first violation (--max-violations 1)")
	c.Flags().StringVar(&f.shard, "shard", "", "check only share INDEX/COUNT of the distinct states (default: from a batch engine's environment: JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, TEST_SHARD_INDEX, CI_NODE_INDEX); merge the shards' --out files with 'powercut merge'")
	c.Flags().IntVar(&f.shardCount, "shard-count", 0, "number of shards when the environment gives only an index (Kubernetes Indexed Job; or POWERCUT_SHARDS)")
	c.Flags().StringVar(&f.resume, "resume", "", "continue an interrupted run from its results file (--out of that run): recorded results are not checked again")
	c.Flags().StringVar(&f.reportHTML, "report", "", "also write a self-contained HTML report to this file")
}

// extras maps the understanding and scale-out flags onto opts.
func (f *exploreFlags) extras(opts *explore.Options) error {
	switch f.minimize {
	case "auto", "":
		opts.Minimize = explore.MinimizeAuto
	case "off":
		opts.Minimize = explore.MinimizeOff
	case "first":
		opts.Minimize = explore.MinimizeFirst
	case "each":
		opts.Minimize = explore.MinimizeEach
	default:
		return usagef("--minimize %q: want auto, off, first or each", f.minimize)
	}
	if err := atLeast(flagMin{"minimize-budget", int64(f.minimizeBudget), 1}, flagMin{"max-violations", int64(f.maxViolations), 0}); err != nil {
		return err
	}
	opts.MinimizeBudget, opts.MaxViolations = f.minimizeBudget, f.maxViolations
	if f.failFast {
		opts.MaxViolations = 1
	}
	sh, from, err := resolveShard(f.shard, f.shardCount, os.Getenv)
	if err != nil {
		return err
	}
	opts.Shard, f.shardFrom = sh, from
	return nil
}

func (f *exploreFlags) options() (explore.Options, error) {
	m, err := model.ParseModel(f.model)
	if err != nil {
		return explore.Options{}, usagef("--model: %v", err)
	}
	strat, err := model.ParseStrategy(f.strategy)
	if err != nil {
		return explore.Options{}, usagef("--strategy: %v", err)
	}
	pol, err := model.ParseDiscardPolicy(f.discard)
	if err != nil {
		return explore.Options{}, usagef("--discard: %v", err)
	}
	if err := atLeast(flagMin{"jobs", int64(f.jobs), 1}, flagMin{"k", int64(f.k), 1}, flagMin{"states", int64(f.states), 0}); err != nil {
		return explore.Options{}, err
	}
	opts := explore.Options{Model: m, Strategy: strat, Discard: pol, K: f.k, States: f.states, Seed: f.seed,
		FromMark: f.fromMark, ToMark: f.toMark, Jobs: f.jobs}
	if err := f.extras(&opts); err != nil {
		return explore.Options{}, err
	}
	return opts, nil
}

// progress returns a progress callback drawing a bar on w when it is a terminal, and a finish
// function; it is silent otherwise.
func progress(w io.Writer) (func(explore.Progress), func()) {
	if !isTerminal(w) {
		return nil, func() {}
	}
	bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("exploring"),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish(), progressbar.OptionSpinnerType(14))
	start := time.Now()
	return func(p explore.Progress) {
			rate := float64(p.Check) / max(time.Since(start).Seconds(), 1e-3)
			eta := "?"
			if p.PointsDone > 0 && p.PointsDone < p.Points {
				el := time.Since(start)
				eta = (time.Duration(float64(el) * float64(p.Points-p.PointsDone) / float64(p.PointsDone))).Round(time.Second).String()
			} else if p.PointsDone == p.Points {
				eta = "0s"
			}
			bar.Describe(fmt.Sprintf("crash points %d/%d, states checked %d (%.0f/s), violations %d, ETA %s",
				p.PointsDone, p.Points, p.Check, rate, p.Violations, eta))
			_ = bar.Add(1)
		}, func() {
			_ = bar.Finish()
		}
}

type nullChecker struct{}

func (nullChecker) Check(context.Context, *explore.Candidate) ([]explore.Violation, error) {
	return nil, nil
}
func (nullChecker) Reads() explore.Reads { return explore.ReadsImage }

// exploreResult is the --json output.
type exploreResult struct {
	Log    string `json:"log"`
	Checks string `json:"check"`
	*explore.Report
	Replay map[string]string `json:"replay_commands,omitempty"`
}

func newExploreCmd(env *Env) *cobra.Command {
	var (
		ef                exploreFlags
		logPath, checkCmd string
		fsckFS, outPath   string
		verifyTrack       string
		bases             []string
		asJSON            bool
		checkTimeout      time.Duration
		reads, explainFS  string
		sectorSize        int64
	)
	c := &cobra.Command{
		Use:   "explore --log F.pclog [--base IMG] --model M [--check CMD | --fsck FS]",
		Short: "Generate the crash states of a recording and check each distinct one",
		Long: `Generate every crash state a recording allows under a durability model and check each
distinct image once. --fsck ext4|xfs|btrfs replays the journal in a scratch layer and runs the
read-only fsck. Without a checker, states are only generated and counted.

--check CMD runs /bin/sh -c CMD per distinct state; exit 0 passes. Its environment:
  POWERCUT_IMAGE          the crash image of device 0: a regular file (writes go to a throw-away layer)
  POWERCUT_IMAGE_<dev>    the crash image of device <dev> (POWERCUT_IMAGE_0, POWERCUT_IMAGE_1, ...)
  POWERCUT_STATE          the state ID ('powercut replay --state ID' rebuilds it)
  POWERCUT_MODEL          the durability model
  POWERCUT_CRASH_POINT    the crash point in words ("before FLUSH op 59 completes")
  POWERCUT_LAST_MARK      the last mark issued before the crash point
  POWERCUT_COVERED_MARKS  the marks all of whose preceding writes landed (comma-separated)
POWERCUT_NO_FUSE=1 serves crash images as copies instead of through FUSE.

Exit codes: 0 no violation, 1 violations found, 2 usage or tool error (do not retry),
3 retryable infrastructure failure (loop device, mount or FUSE setup failed, out of space).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := ef.options()
			if err != nil {
				return err
			}
			if logPath == "" {
				return usagef("--log is required")
			}
			if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
				return usagef("--sector-size %d: want 512 or 4096", sectorSize)
			}
			if err := exclusive(cmd, "check", "fsck", "verify"); err != nil {
				return err
			}
			l, err := pclog.Open(logPath)
			if err != nil {
				return err
			}
			defer l.Close()
			if l.Torn != nil {
				fmt.Fprintf(env.Stderr, "powercut: %s: %v; exploring what was recovered\n", logPath, l.Torn)
			}
			if err := checkSectorSize(l, sectorSize); err != nil {
				return err
			}
			bm, closeBases, basePaths, err := openBases(l, bases)
			if err != nil {
				return err
			}
			defer closeBases()
			ctx := cmd.Context()
			if checkCmd != "" || fsckFS != "" {
				sweepLeftovers(env) // --check and --fsck serve scratch files through FUSE
				defer releaseOwn(env)
			}
			chk, what, release, err := exploreChecker(ctx, checkCmd, fsckFS, verifyTrack, reads, checkTimeout)
			if err != nil {
				return err
			}
			defer release()
			replay := func(id string) string { return replayLine(logPath, basePaths, sectorSize, id) }
			ri := newRunInfo(logPath, len(l.Entries), opts, what)
			ri.LogHash = l.Digest
			ri.Bases = basePaths
			ri.SectorSize = sectorSize
			outs, err := ef.openOutputs(outPath, ri, &opts, replay)
			if err != nil {
				return err
			}
			prog, finish := progress(env.Stderr)
			opts.Progress = prog
			if !asJSON {
				fmt.Fprintf(env.Stdout, "exploring %s: model %s, strategy %s, discard %s, check %s\n", logPath, opts.Model, opts.Strategy, opts.Discard, what)
				if n := shardNote(opts.Shard, ef.shardFrom); n != "" {
					fmt.Fprintf(env.Stdout, "%s\n", n)
				}
			}
			newGroup := groupSpotter()
			src := explore.Source{Log: l, Bases: bm, SectorSize: sectorSize}
			rep, err := explore.Explore(ctx, src, opts, chk, func(f explore.Found) {
				outs.violation(f)
				if !asJSON && newGroup(f) {
					finishLine(env.Stderr)
					printViolationWith(env.Stdout, f, replay)
				}
			})
			finish()
			if err == nil && explainFS != "" {
				explainGroups(ctx, env.Stderr, explainFS, src, rep)
			}
			if ferr := outs.finish(rep, l, "powercut explore "+logPath); ferr != nil && err == nil {
				err = ferr
			}
			if ierr, ok := exploreInterrupted(ctx, env, asJSON, rep, err); ok {
				return ierr
			}
			if err != nil {
				return err
			}
			_, counted := chk.(nullChecker)
			if err := printExplore(env.Stdout, asJSON, logPath, what, rep, replay, counted); err != nil {
				return err
			}
			if len(rep.Violations) > 0 {
				return ErrViolations
			}
			return nil
		},
	}
	ef.register(c, "reorder")
	c.Flags().StringVar(&logPath, "log", "", "the recording (.pclog)")
	c.Flags().StringArrayVar(&bases, "base", nil, "base image of device 0, or ID=IMG for device ID (zstd accepted)")
	c.Flags().StringVar(&checkCmd, "check", "", "shell command run per distinct state (exit 0 = pass)")
	c.Flags().StringVar(&fsckFS, "fsck", "", "built-in check: ext4, xfs or btrfs")
	c.Flags().StringVar(&verifyTrack, "verify", "", "check every block against the versions a powercut verify run may leave (its --track file)")
	c.Flags().DurationVar(&checkTimeout, "check-timeout", 0, "kill a check running longer than this (a violation)")
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable report on stdout")
	c.Flags().StringVar(&outPath, "out", "", "results file (JSON lines, appended and synced as results come): violations, every checked state and the summary; --resume continues it, 'powercut merge' joins shards, 'powercut report' renders it")
	c.Flags().Int64Var(&sectorSize, "sector-size", 0, "logical sector size of the recorded devices, 512 or 4096 (default: the log header's): the unit of tearing; every operation must be aligned to it")
	c.Flags().StringVar(&explainFS, "explain", "", "file system of the images (ext4, xfs, btrfs): say what each deviating operation of a minimal state holds (a file's data, the journal, an inode table...)")
	c.Flags().StringVar(&reads, "check-reads", "", "what the --check command's verdict depends on besides the image: image, last-mark or marks (default): identical (image, context) pairs are checked once")
	return c
}

// exploreInterrupted ends an exploration a signal cancelled: the summary of what was done before
// the interrupt, then interruptExit.
func exploreInterrupted(ctx context.Context, env *Env, asJSON bool, rep *explore.Report, err error) (error, bool) {
	if err != nil && ctx.Err() != nil && rep != nil && !asJSON {
		printSummary(env.Stdout, rep)
	}
	return interruptExit(ctx, env, rep, err)
}

func finishLine(w io.Writer) {
	if isTerminal(w) {
		fmt.Fprint(w, "\r\033[K")
	}
}

// printExplore ends an exploration: JSON, or the groups, stacks and summary.
func printExplore(w io.Writer, asJSON bool, logPath, what string, rep *explore.Report, replay func(string) string, counted bool) error {
	if asJSON {
		res := exploreResult{Log: logPath, Checks: what, Report: rep, Replay: map[string]string{}}
		for _, v := range rep.Violations {
			res.Replay[v.StateID] = replay(v.StateID)
		}
		for _, g := range rep.Groups {
			if g.Minimal != nil {
				res.Replay[g.Minimal.StateID] = replay(g.Minimal.StateID)
			}
		}
		return writeJSON(w, res)
	}
	printGroups(w, rep, replay)
	printStacks(w, logPath, rep)
	printSummary(w, rep, counted)
	return nil
}

// exploreChecker builds the checker --check, --fsck or --verify asks for (none: states are only
// counted) and says what it is; release frees its scratch directory.
func exploreChecker(ctx context.Context, checkCmd, fsckFS, verifyTrack, reads string, timeout time.Duration) (explore.Checker, string, func(), error) {
	nothing := func() {}
	if reads != "" && checkCmd == "" {
		return nil, "", nothing, usagef("--check-reads applies to --check only")
	}
	switch {
	case verifyTrack != "":
		chk, err := verify.NewExploreChecker(verifyTrack)
		return chk, "verify " + verifyTrack, nothing, err
	case checkCmd == "" && fsckFS == "":
		return nullChecker{}, "none (states counted only)", nothing, nil
	}
	dir, err := scratch.New(ctx)
	if err != nil {
		return nil, "", nothing, err
	}
	release := func() { dir.Close() }
	files := checkers.Files{Dir: dir}
	if checkCmd != "" {
		rd, err := explore.ParseReads(reads)
		if err != nil {
			release()
			return nil, "", nothing, usagef("--check-reads: %v", err)
		}
		return &checkers.Command{Files: files, Cmd: checkCmd, Timeout: timeout, Context: rd}, "command: " + checkCmd, release, nil
	}
	f, err := checkers.NewFsck(fsckFS, files)
	if err != nil {
		release()
		return nil, "", nothing, usagef("--fsck: %v", err)
	}
	if timeout > 0 {
		f.Timeout = timeout
	}
	return f, "fsck " + fsckFS, release, nil
}

// groupSpotter reports whether a violation is the first of its kind (oracle and message class):
// streamed output shows those as they are found, the rest is counted in the group blocks.
func groupSpotter() func(explore.Found) bool {
	seen := map[string]bool{}
	return func(f explore.Found) bool {
		k := f.Oracle + "\x00" + f.Class()
		if seen[k] {
			return false
		}
		seen[k] = true
		return true
	}
}

// printGroups prints one block per group of violations: its count, the minimal state with the
// sentence that explains it, and the line that rebuilds it.
func printGroups(w io.Writer, rep *explore.Report, replay func(string) string) {
	if len(rep.Groups) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%d violation(s) in %d group(s) of the same cause:\n", len(rep.Violations), len(rep.Groups))
	for i, g := range rep.Groups {
		fmt.Fprintf(w, "\n[%d] %s: %s (%d violations in %d states)\n", i+1, g.Oracle, g.Class, g.Violations, g.States)
		if m := g.Minimal; m != nil {
			fmt.Fprintf(w, "    cause: %s\n", m.Explanation)
			note := ""
			if !m.Complete {
				note = ", budget spent: may not be minimal"
			}
			for _, wh := range m.Where {
				fmt.Fprintf(w, "    where: %s\n", wh)
			}
			fmt.Fprintf(w, "    minimal state: %s (%d checks%s), crash point: %s\n", m.StateID, m.Checks, note, m.Reason)
			fmt.Fprintf(w, "    rebuild: %s\n", replay(m.StateID))
		} else {
			fmt.Fprintf(w, "    first state: %s (not minimised: --minimize first)\n", g.First.StateID)
			fmt.Fprintf(w, "    rebuild: %s\n", replay(g.First.StateID))
		}
	}
	fmt.Fprintln(w)
}

// printStacks shows, for a recording made with record.CaptureStacks, where in the program each
// deviating operation of a minimal state was issued.
func printStacks(w io.Writer, logPath string, rep *explore.Report) {
	st, err := record.LoadStacks(logPath)
	if err != nil || st == nil {
		return
	}
	for i, g := range rep.Groups {
		if g.Minimal == nil {
			continue
		}
		for _, d := range g.Minimal.Deviations {
			if s := st[d.Op]; s != "" {
				fmt.Fprintf(w, "[%d] op %d was issued at:\n%s", i+1, d.Op, indent(s, "    "))
			}
		}
	}
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// printSummary ends a run with its counts; without a checker (counted) it says what was generated
// and nothing about checks.
func printSummary(w io.Writer, rep *explore.Report, counted ...bool) {
	fmt.Fprintf(w, "crash points: %d\nstates generated: %d\ndistinct images: %d\n", rep.CrashPoints, rep.States, rep.Distinct)
	if len(counted) > 0 && counted[0] {
		fmt.Fprintf(w, "no checker given: states generated and deduplicated only (--check, --fsck or --verify checks them)\n")
	} else {
		if rep.Shard != nil {
			fmt.Fprintf(w, "checked here (shard %s): %d\n", rep.Shard, rep.Checked)
		} else {
			fmt.Fprintf(w, "checked: %d\n", rep.Checked)
		}
		fmt.Fprintf(w, "violations: %d (in %d states)\n", len(rep.Violations), rep.BadStates)
	}
	if rep.Truncated > 0 {
		fmt.Fprintf(w, "note: %d crash points were capped (--states, or exhaustive beyond %d states): the rest of their states were not generated\n", rep.Truncated, model.ExhaustiveLimit)
	}
	if rep.StoppedEarly {
		fmt.Fprintf(w, "note: stopped early at the violation limit (--max-violations/--fail-fast)\n")
	}
	fmt.Fprintf(w, "time: %.1fs\n", rep.Seconds)
}
