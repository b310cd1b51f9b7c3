package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fsharness"
	"github.com/powercut/powercut/pclog"
)

// fsResult is the --json output and the content of OUT/report.json.
type fsResult struct {
	FS          string  `json:"fs"`
	Out         string  `json:"out"`
	Log         string  `json:"log"`
	Base        string  `json:"base"`
	Ops         int     `json:"recorded_ops"`
	RecordSecs  float64 `json:"record_seconds"`
	ExploreSecs float64 `json:"explore_seconds"`
	Rate        float64 `json:"checks_per_second"`
	*explore.Report
	Replay map[string]string `json:"replay_commands,omitempty"`
}

func newFS(env *Env) *cobra.Command {
	var (
		ef                              exploreFlags
		fsType, size, mkfsOpts, mntOpts string
		workload, check, out, keep      string
		recLog, recBase                 string
		sectorSize                      int
		checkTimeout                    time.Duration
		asJSON                          bool
		gf                              genFlags
	)
	c := &cobra.Command{
		Use:   "fs --fs ext4|xfs|btrfs --workload SCRIPT [--check SCRIPT] [flags]",
		Short: "Crash-test a kernel file system and the application on it (FUSE + loop, no device-mapper)",
		Long: `Make a file system on a fresh image, record every block request it issues while SCRIPT runs
on it (POWERCUT_MNT = its mount point; 'powercut mark NAME' labels points of the recording), then
explore the crash states: each distinct crash image is mounted through a throw-away
copy-on-write layer (the kernel replays its journal, as after a reboot), checked by the --check
script (POWERCUT_MNT, POWERCUT_LAST_MARK = last mark issued before the crash point,
POWERCUT_COVERED_MARKS = marks whose writes are all durable in this state, POWERCUT_STATE),
unmounted, and checked read-only by e2fsck -fn, xfs_repair -n or btrfs check --readonly.
A mount failure, a failing check and an fsck error are violations.

A run without violations deletes its image and recording unless --keep DIR keeps them; a run
with violations or an error keeps them and says where. A kept recording is explored again, with
another check, without recording: powercut fs --fs ext4 --log DIR/fs.pclog --base DIR/base.img
--check SCRIPT. --out R.jsonl, --resume, --report, --minimize, --shard work as for explore (--resume
and --shard on a kept recording, --log and --base; with --generate a shard runs every Nth workload).
--mkfs-opts is split on white space; --mount-opts is one mount -o argument, used for the
recording and for every crash state. Needs root, FUSE and loop devices.

Exit codes: 0 no violation, 1 violations found, 2 usage or tool error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sweepLeftovers(env)
			defer releaseOwn(env)
			if gf.active() {
				return gf.run(cmd, env, &ef, fsGenArgs{fsType, size, mkfsOpts, mntOpts, genDir(keep, out), workload, check, checkTimeout, asJSON})
			}
			return runFS(cmd, env, &ef, fsArgs{fsType: fsType, size: size, mkfsOpts: mkfsOpts, mntOpts: mntOpts, workload: workload,
				check: check, out: out, keep: keep, logPath: recLog, base: recBase, checkTimeout: checkTimeout, asJSON: asJSON, sectorSize: sectorSize})
		},
	}
	ef.register(c, "reorder")
	f := c.Flags()
	f.StringVar(&fsType, "fs", "", "file system: ext4, xfs or btrfs")
	f.StringVar(&size, "size", "", "disk size (bytes or K/M/G; default 64M for ext4, 300M for xfs, 256M for btrfs)")
	f.StringVar(&mkfsOpts, "mkfs-opts", "", "extra mkfs options (split on white space)")
	f.StringVar(&mntOpts, "mount-opts", "", "mount -o options for the recording and every crash state (e.g. nobarrier)")
	f.StringVar(&workload, "workload", "", "script (or shell command) run on the mounted file system; POWERCUT_MNT is its mount point")
	f.StringVar(&check, "check", "", "script (or shell command) run on each mounted crash state; exit 0 = pass")
	f.StringVar(&keep, "keep", "", "keep base.img, fs.pclog and report.json in this directory (default: deleted after a run without violations; a failed run keeps them and says where)")
	f.StringVar(&out, "out", "", "results file (JSON lines: every checked state, violations, the summary with groups); an existing directory is taken as --keep (deprecated)")
	f.StringVar(&recLog, "log", "", "explore this recording kept by an earlier run (with --base and --check) instead of recording again")
	f.StringVar(&recBase, "base", "", "the base image of --log (base.img of the kept directory)")
	f.IntVar(&sectorSize, "sector-size", 0, "logical sector size of the recording's loop device: 512 (default) or 4096 (losetup --sector-size; recorded in the log: the unit of tearing)")
	f.DurationVar(&checkTimeout, "check-timeout", 0, "kill a check (or fsck) running longer than this; the state is a violation")
	f.BoolVar(&asJSON, "json", false, "machine-readable report on stdout")
	gf.register(c)
	return c
}

// fsArgs are the flags of powercut fs.
type fsArgs struct {
	fsType, size, mkfsOpts, mntOpts, workload, check, out, keep, logPath, base string
	checkTimeout                                                               time.Duration
	asJSON                                                                     bool
	sectorSize                                                                 int
}

// check validates the flags of a recorded (not generated) run, before anything is created.
func (a *fsArgs) validate(ef *exploreFlags) (explore.Options, int64, error) {
	opts, err := ef.options()
	if err != nil {
		return opts, 0, err
	}
	if a.fsType == "" {
		return opts, 0, usagef("--fs is required")
	}
	if a.out != "" {
		if st, err := os.Stat(a.out); err == nil && st.IsDir() {
			if a.keep != "" {
				return opts, 0, usagef("--out %s is a directory (the old meaning of --keep) and --keep is given too", a.out)
			}
			a.keep, a.out = a.out, ""
		}
	}
	switch {
	case a.logPath != "" || a.base != "":
		if a.logPath == "" || a.base == "" {
			return opts, 0, usagef("--log and --base go together: the recording and its base image")
		}
		if a.workload != "" {
			return opts, 0, usagef("--workload records anew; --log explores a kept recording: give one")
		}
	case a.workload == "":
		return opts, 0, usagef("--workload is required (or --log and --base of a kept recording)")
	case ef.resume != "":
		return opts, 0, usagef("--resume continues the exploration of a kept recording: give --log and --base")
	case opts.Shard.Count > 1:
		// Every shard would run the workload again: another kernel run, other crash states.
		return opts, 0, usagef("shard %s (from %s) of a fresh recording: each shard would record its own run of the workload, and the shards' states would not be one run's; record once (--keep DIR, unsharded), then shard its exploration: --log DIR/%s --base DIR/%s",
			shardLabel(&opts.Shard), ef.shardFrom, fsharness.LogName, fsharness.BaseName)
	}
	var n int64
	if a.size != "" {
		if n, err = parseSize(a.size); err != nil || n <= 0 {
			return opts, 0, usagef("--size %q: want a positive size (%v)", a.size, err)
		}
	}
	if a.checkTimeout < 0 {
		return opts, 0, usagef("--check-timeout must not be negative")
	}
	if a.sectorSize != 0 && a.sectorSize != 512 && a.sectorSize != 4096 {
		return opts, 0, usagef("--sector-size %d: want 512 or 4096", a.sectorSize)
	}
	return opts, n, nil
}

// runFS records a workload on a fresh file system (or takes a kept recording) and explores it.
func runFS(cmd *cobra.Command, env *Env, ef *exploreFlags, a fsArgs) error {
	opts, n, err := a.validate(ef)
	if err != nil {
		return err
	}
	cfg := fsharness.Config{FS: a.fsType, Size: n, MkfsOpts: a.mkfsOpts, MountOpts: a.mntOpts, Workload: a.workload, Check: a.check,
		CheckTimeout: a.checkTimeout, Log: env.Stderr, SectorSize: a.sectorSize, Recording: a.logPath, RecordingBase: a.base}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	// Only now, with every flag valid, is anything created.
	cfg.Out = a.keep
	if cfg.Out == "" && a.logPath == "" {
		d, err := os.MkdirTemp("", "powercut-fs-"+a.fsType+"-")
		if err != nil {
			return err
		}
		cfg.Out = d
	}
	logPath, basePath := a.logPath, a.base
	if a.logPath == "" {
		abs, err := filepath.Abs(cfg.Out)
		if err != nil {
			return err
		}
		logPath, basePath = filepath.Join(abs, fsharness.LogName), filepath.Join(abs, fsharness.BaseName)
	}
	replay := func(id string) string { return replayCommand(logPath, []string{basePath}, id) }
	var outs *outputs
	if a.out != "" || ef.resume != "" || ef.reportHTML != "" {
		records, digest := 0, ""
		if a.logPath != "" {
			if l, err := pclog.Open(a.logPath); err == nil {
				records, digest = len(l.Entries), l.Digest
				l.Close()
			}
		}
		ri := newRunInfo(logPath, records, opts, "fs "+a.fsType+" "+a.check)
		ri.LogHash = digest
		if outs, err = ef.openOutputs(a.out, ri, &opts, replay); err != nil {
			return err
		}
	}
	prog, finish := progress(env.Stderr)
	opts.Progress = prog
	cfg.Explore = opts
	newGroup := groupSpotter()
	cfg.OnViolation = func(f explore.Found) {
		if outs != nil {
			outs.violation(f)
		}
		if a.asJSON || !newGroup(f) {
			return
		}
		finishLine(env.Stderr)
		printViolationWith(env.Stdout, f, replay)
		fmt.Fprintf(env.Stdout, "  mount:   mount -t %s -o %s crash.img /mnt\n", a.fsType, cfg.MountHintOpts())
	}
	res, err := fsharness.Run(cmd.Context(), cfg)
	finish()
	if res == nil {
		if a.keep == "" && a.logPath == "" {
			os.RemoveAll(cfg.Out)
		}
		if ierr, ok := interruptExit(cmd.Context(), env, nil, err); ok {
			return ierr
		}
		return err
	}
	return fsReport(cmd, env, a, res, err, outs, replay)
}

// fsReport explains and prints what a run found, journals it, and keeps or deletes its files.
func fsReport(cmd *cobra.Command, env *Env, a fsArgs, res *fsharness.Result, runErr error, outs *outputs, replay func(string) string) error {
	r := fsResult{FS: a.fsType, Out: res.Out, Log: res.LogPath, Base: res.Base, Ops: res.Ops,
		RecordSecs: res.RecordTime.Seconds(), ExploreSecs: res.ExploreTime.Seconds(), Report: res.Report, Replay: map[string]string{}}
	var l *pclog.Log
	if ol, err := pclog.Open(res.LogPath); err == nil {
		l = ol
		defer ol.Close()
	}
	if rep := res.Report; rep != nil && runErr == nil {
		if l != nil {
			if base, err := os.Open(res.Base); err == nil {
				explainGroups(cmd.Context(), env.Stderr, a.fsType, explore.Source{Log: l, Bases: map[uint16]io.ReaderAt{0: base}}, rep)
				base.Close()
			}
		}
		if res.ExploreTime > 0 {
			r.Rate = float64(rep.Checked) / res.ExploreTime.Seconds()
		}
		for _, v := range rep.Violations {
			r.Replay[v.StateID] = replay(v.StateID)
		}
	}
	if outs != nil {
		if err := outs.finish(res.Report, l, "powercut fs --fs "+a.fsType); err != nil && runErr == nil {
			runErr = err
		}
	}
	bad := res.Report != nil && len(res.Report.Violations) > 0
	kept := a.keep != "" || a.logPath != "" || bad || runErr != nil
	if res.Out != "" && kept && res.Report != nil {
		if f, ferr := os.Create(filepath.Join(res.Out, fsharness.ReportName)); ferr == nil {
			enc := json.NewEncoder(f)
			enc.SetIndent("", "  ")
			_ = enc.Encode(r)
			f.Close()
		}
	}
	if !kept && res.Out != "" {
		os.RemoveAll(res.Out)
	}
	if runErr != nil {
		if res.Out != "" {
			fmt.Fprintf(env.Stderr, "powercut: the recording and its base image are kept in %s\n", res.Out)
		}
		if ierr, ok := interruptExit(cmd.Context(), env, res.Report, runErr); ok {
			return ierr
		}
		return runErr
	}
	if a.asJSON {
		return writeJSONThen(env, r, bad)
	}
	where := "deleted (no violation; --keep DIR keeps them)"
	if kept && res.Out != "" {
		where = "kept in " + res.Out
	}
	if a.logPath == "" {
		fmt.Fprintf(env.Stdout, "%s: recorded %d operations in %.1fs; %s\n", a.fsType, res.Ops, r.RecordSecs, where)
	}
	printGroups(env.Stdout, res.Report, replay)
	printSummary(env.Stdout, res.Report)
	fmt.Fprintf(env.Stdout, "checked %d states in %.1fs (%.2f states/s)\n", res.Report.Checked, r.ExploreSecs, r.Rate)
	if bad {
		return ErrViolations
	}
	return nil
}

// writeJSONThen writes v and returns the exit status violations give.
func writeJSONThen(env *Env, v any, bad bool) error {
	if err := writeJSON(env.Stdout, v); err != nil {
		return err
	}
	if bad {
		return ErrViolations
	}
	return nil
}

// genDir is where a generated campaign keeps its files: --keep DIR (or --out DIR, deprecated).
func genDir(keep, out string) string {
	if keep != "" {
		return keep
	}
	return out
}
