package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/fsharness"
)

// genFlags are the flags of `powercut fs`'s generated mode (B3-style workloads with the
// built-in oracle, issue 11). They live here so that fs.go only registers them and hands over.
type genFlags struct {
	generate    string
	workloadIDs []string
	limit       int
	printScript bool
	nested      bool
	keepLogs    bool
}

// fsGenArgs are the flags fs.go owns that the generated mode uses too.
type fsGenArgs struct {
	fsType, size, mkfsOpts, mntOpts, out, workload, check string
	checkTimeout                                          time.Duration
	asJSON                                                bool
}

const fsGenerateHelp = `
Generated workloads (no --workload, no --check): --generate seq-1|seq-2|seq-3 enumerates every
workload of 1, 2 or 3 file operations over a small file set, each followed by a persistence
point (fsync, fdatasync, sync or none), validates each on tmpfs (invalid ones are dropped), makes
the file system once and records every workload from that base copy-on-write, then checks each
crash state with the built-in oracle: mount (journal replay), compare what the last persistence
point before the crash promised (docs/fs-guarantees.md), check the tree is usable, unmount, fsck.
Violations are classified file-missing, old-content, data-corrupted, metadata-corrupted,
unusable, fsck, unmountable. --limit N runs N workloads (with --seed S: a seeded random subset),
--jobs N runs N workloads in parallel, --model defaults to flush. --workload-id ID reruns one
workload (comma-separated: several); with --print-script it prints the workload as a shell
script instead (no root needed).`

func (g *genFlags) register(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&g.generate, "generate", "", "run the generated workloads seq-1, seq-2 or seq-3 with the built-in oracle (instead of --workload/--check)")
	f.StringSliceVar(&g.workloadIDs, "workload-id", nil, "run only this generated workload (its ID, as reported); comma-separated for several")
	f.IntVar(&g.limit, "limit", 0, "with --generate: run at most N workloads (0: all; with --seed: a seeded random subset)")
	f.BoolVar(&g.printScript, "print-script", false, "with --workload-id: print the workload as a shell script and exit")
	f.BoolVar(&g.nested, "nested", false, "with --generate: add the nested directory A/C and its files to the file set")
	f.BoolVar(&g.keepLogs, "keep-logs", false, "with --generate: keep every workload's recording in OUT/workloads (default: only those with violations)")
	c.Long += "\n" + fsGenerateHelp
}

// active reports whether the command runs in generated mode.
func (g *genFlags) active() bool { return g.generate != "" || len(g.workloadIDs) > 0 || g.printScript }

func parseSeq(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "seq-%d", &n); err != nil || fmt.Sprintf("seq-%d", n) != s || n < 1 || n > fsgen.MaxSeq {
		return 0, usagef("--generate %q: want seq-1, seq-2 or seq-3", s)
	}
	return n, nil
}

// genResultJSON is OUT/report.json (and --json) of a generated run.
type genResultJSON struct {
	*fsharness.GenResult
	Rate       float64           `json:"workloads_per_second"`
	Model      string            `json:"model"`
	Generate   string            `json:"generate,omitempty"`
	Replay     map[string]string `json:"replay_commands,omitempty"`
	WallSecond float64           `json:"wall_seconds"`
}

// validate checks the generated mode's flags before anything runs.
func (g *genFlags) validate(a fsGenArgs) error {
	if a.workload != "" || a.check != "" {
		return usagef("--generate and --workload-id run generated workloads with the built-in oracle: drop --workload and --check")
	}
	if g.generate != "" && len(g.workloadIDs) > 0 {
		return usagef("--generate and --workload-id: give one of them")
	}
	if a.fsType == "" {
		return usagef("--fs is required")
	}
	if g.limit < 0 {
		return usagef("--limit must not be negative")
	}
	for _, id := range g.workloadIDs {
		if _, err := fsgen.ParseID(id); err != nil {
			return usagef("--workload-id: %v", err)
		}
	}
	if a.checkTimeout < 0 {
		return usagef("--check-timeout must not be negative")
	}
	return nil
}

func (g *genFlags) run(cmd *cobra.Command, env *Env, ef *exploreFlags, a fsGenArgs) error {
	if g.printScript {
		if len(g.workloadIDs) == 0 {
			return usagef("--print-script needs --workload-id")
		}
		for _, id := range g.workloadIDs {
			w, err := fsgen.ParseID(id)
			if err != nil {
				return usagef("--workload-id: %v", err)
			}
			fmt.Fprint(env.Stdout, w.Script())
		}
		return nil
	}
	if err := g.validate(a); err != nil {
		return err
	}
	cfg := fsharness.GenConfig{FS: a.fsType, MkfsOpts: a.mkfsOpts, MountOpts: a.mntOpts, IDs: g.workloadIDs,
		Limit: g.limit, Jobs: ef.jobs, Out: a.out, KeepLogs: g.keepLogs, CheckTimeout: a.checkTimeout,
		Log: env.Stderr, Gen: fsgen.Options{Nested: g.nested}}
	if g.generate != "" {
		n, err := parseSeq(g.generate)
		if err != nil {
			return err
		}
		cfg.Seq = n
	}
	flags := cmd.Flags()
	cfg.Shuffle, cfg.Seed = flags.Changed("seed"), ef.seed
	if !flags.Changed("model") {
		ef.model = "flush"
	}
	opts, err := ef.options()
	if err != nil {
		return err
	}
	cfg.Explore = opts
	if a.size != "" {
		n, err := parseSize(a.size)
		if err != nil || n <= 0 {
			return usagef("--size %q: want a positive size (%v)", a.size, err)
		}
		cfg.Size = n
	}
	mountHint := (&fsharness.Config{FS: a.fsType, MountOpts: a.mntOpts}).MountHintOpts()
	var basePath string
	replay := map[string]string{}
	cfg.OnWorkload = func(w *fsharness.WorkloadResult) {
		if w.Failed != "" {
			if !a.asJSON {
				fmt.Fprintf(env.Stdout, "workload failed: %s: %s (the workload is invalid on %s; not a crash bug)\n", w.ID, w.Failed, a.fsType)
			}
			return
		}
		if w.Report == nil {
			return
		}
		for _, v := range w.Report.Violations {
			line := replayCommand(w.Log, []string{basePath}, v.StateID)
			replay[w.ID+" "+v.StateID] = line
			if a.asJSON {
				continue
			}
			printViolationWith(env.Stdout, v, func(string) string { return line })
			fmt.Fprintf(env.Stdout, "  mount:   mount -t %s -o %s crash.img /mnt\n", a.fsType, mountHint)
		}
	}
	if cfg.Out == "" {
		if cfg.Out, err = os.MkdirTemp("", "powercut-fs-"+a.fsType+"-gen-"); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(cfg.Out)
	if err != nil {
		return err
	}
	basePath = filepath.Join(abs, fsharness.BaseName)
	res, err := fsharness.RunGenerated(cmd.Context(), cfg)
	if res == nil {
		return err
	}
	r := genResultJSON{GenResult: res, Rate: res.Rate(), Model: opts.Model.String(), Generate: g.generate,
		Replay: replay, WallSecond: res.Wall.Seconds()}
	if f, ferr := os.Create(filepath.Join(res.Out, fsharness.ReportName)); ferr == nil {
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
		f.Close()
	}
	if err != nil && !errors.Is(err, fsharness.ErrNothingRan) {
		return err
	}
	if a.asJSON {
		if jerr := writeJSON(env.Stdout, r); jerr != nil {
			return jerr
		}
	} else {
		printGenSummary(env, res, r.Model)
	}
	if err != nil {
		return err
	}
	if res.Violations > 0 {
		return ErrViolations
	}
	return nil
}

func printGenSummary(env *Env, res *fsharness.GenResult, modelName string) {
	w := env.Stdout
	fmt.Fprintf(w, "%s: %d workloads selected, %d dropped by tmpfs validation, %d failed on %s, %d recorded and checked\n",
		res.FS, res.Selected, len(res.Dropped), res.Failed, res.FS, res.Ran)
	fmt.Fprintf(w, "model %s: states generated: %d, checked: %d\n", modelName, res.States, res.Checked)
	var by []string
	for _, k := range res.SortedOracles() {
		by = append(by, fmt.Sprintf("%s %d", k, res.ByOracle[k]))
	}
	fmt.Fprintf(w, "violations: %d (in %d states)", res.Violations, res.BadStates)
	if len(by) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(by, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "time: %.1fs, %.2f workloads/s\n", res.Wall.Seconds(), res.Rate())
	if n := max(res.Ran+res.Failed, 1); res.Ran+res.Failed > 0 {
		per := func(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()/float64(n)) }
		t := res.Times
		fmt.Fprintf(w, "per workload (summed over jobs): record %s, generate states %s, mount %s, compare %s, fsck %s\n",
			per(t.Record), per(t.Generate), per(t.Mount), per(t.Compare), per(t.Fsck))
	}
	fmt.Fprintf(w, "kept in %s\n", res.Out)
}
