package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fsharness"
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
		workload, check, out            string
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

--out DIR keeps base.img, fs.pclog and report.json (default: a new directory under $TMPDIR).
--mkfs-opts is split on white space; --mount-opts is one mount -o argument, used for the
recording and for every crash state. Needs root, FUSE and loop devices.

Exit codes: 0 no violation, 1 violations found, 2 usage or tool error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if gf.active() {
				return gf.run(cmd, env, &ef, fsGenArgs{fsType, size, mkfsOpts, mntOpts, out, workload, check, checkTimeout, asJSON})
			}
			opts, err := ef.options()
			if err != nil {
				return err
			}
			if fsType == "" || workload == "" {
				return usagef("--fs and --workload are required")
			}
			var n int64
			if size != "" {
				if n, err = parseSize(size); err != nil || n <= 0 {
					return usagef("--size %q: want a positive size (%v)", size, err)
				}
			}
			if checkTimeout < 0 {
				return usagef("--check-timeout must not be negative")
			}
			prog, finish := progress(env.Stderr)
			opts.Progress = prog
			var logPath, basePath string
			cfg := fsharness.Config{FS: fsType, Size: n, MkfsOpts: mkfsOpts, MountOpts: mntOpts, Workload: workload, Check: check,
				Explore: opts, Out: out, CheckTimeout: checkTimeout, Log: env.Stderr}
			if !asJSON {
				cfg.OnViolation = func(f explore.Found) {
					finishLine(env.Stderr)
					printViolation(env.Stdout, logPath, []string{basePath}, f)
					fmt.Fprintf(env.Stdout, "  mount:   mount -t %s -o %s crash.img /mnt\n", fsType, cfg.MountHintOpts())
				}
			}
			if cfg.Out == "" {
				d, err := os.MkdirTemp("", "powercut-fs-"+fsType+"-")
				if err != nil {
					return err
				}
				cfg.Out = d
			}
			abs, err := filepath.Abs(cfg.Out)
			if err != nil {
				return err
			}
			logPath, basePath = filepath.Join(abs, fsharness.LogName), filepath.Join(abs, fsharness.BaseName)
			res, err := fsharness.Run(cmd.Context(), cfg)
			finish()
			if res == nil {
				return err
			}
			r := fsResult{FS: fsType, Out: res.Out, Log: res.LogPath, Base: res.Base, Ops: res.Ops,
				RecordSecs: res.RecordTime.Seconds(), ExploreSecs: res.ExploreTime.Seconds(), Report: res.Report, Replay: map[string]string{}}
			if res.Report != nil {
				if res.ExploreTime > 0 {
					r.Rate = float64(res.Report.Checked) / res.ExploreTime.Seconds()
				}
				for _, v := range res.Report.Violations {
					r.Replay[v.StateID] = replayCommand(res.LogPath, []string{res.Base}, v.StateID)
				}
				if f, ferr := os.Create(filepath.Join(res.Out, fsharness.ReportName)); ferr == nil {
					enc := json.NewEncoder(f)
					enc.SetIndent("", "  ")
					_ = enc.Encode(r)
					f.Close()
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(env.Stdout, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Stdout, "%s: recorded %d operations in %.1fs; kept in %s\n", fsType, res.Ops, r.RecordSecs, res.Out)
				printSummary(env.Stdout, res.Report)
				fmt.Fprintf(env.Stdout, "checked %d states in %.1fs (%.2f states/s)\n", res.Report.Checked, r.ExploreSecs, r.Rate)
			}
			if len(res.Report.Violations) > 0 {
				return ErrViolations
			}
			return nil
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
	f.StringVar(&out, "out", "", "directory keeping base.img, fs.pclog and report.json")
	f.DurationVar(&checkTimeout, "check-timeout", 0, "kill a check (or fsck) running longer than this; the state is a violation")
	f.BoolVar(&asJSON, "json", false, "machine-readable report on stdout")
	gf.register(c)
	return c
}
