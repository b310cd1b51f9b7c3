// Package fsharness crash-tests a kernel file system (ext4, xfs, btrfs) and the application
// running on it, on a stock kernel without device-mapper or nbd:
//
//  1. mkfs on a fresh base image (not recorded: the crash states of mkfs are not the question);
//  2. serve the base copy-on-write as a recorded FUSE file (internal/fuserec), put it behind
//     `losetup --direct-io=on`, mount it, and run the workload with POWERCUT_MNT and a working
//     `powercut mark NAME` (POWERCUT_CONTROL names the recorder's control socket);
//  3. unmount, detach, stop the recorder: the pclog now holds every block request the file
//     system issued, in exact submit/completion order;
//  4. explore the crash states with FSChecker: each distinct crash image is served as a scratch
//     file (writes go to a throw-away layer), mounted (which replays the journal/log, as a reboot
//     would), checked by the user's script, unmounted, and fsck'ed read-only.
//
// Every resource (FUSE mounts, loop devices, file system mounts, the control socket, processes of
// the workload and of checks) is released on every path, including cancellation and a check
// killed by its timeout: each is undone by a deferred release that does not depend on the
// (possibly cancelled) context.
package fsharness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/checkers"
	"github.com/powercut/powercut/internal/control"
	"github.com/powercut/powercut/internal/fuserec"
	"github.com/powercut/powercut/internal/leftovers"
	"github.com/powercut/powercut/internal/scratch"
	"github.com/powercut/powercut/pclog"
)

// File names inside Config.Out.
const (
	BaseName   = "base.img"
	LogName    = "fs.pclog"
	ReportName = "report.json"
)

// Config describes one run.
type Config struct {
	// FS is ext4, xfs or btrfs.
	FS string
	// Size of the disk in bytes (0: DefaultSize(FS)).
	Size int64
	// MkfsOpts and MountOpts are passed to mkfs and to every mount (the recording's and the crash
	// states'); MkfsOpts is split on white space.
	MkfsOpts, MountOpts string
	// Workload is a script (a file; run with /bin/sh unless executable) or a shell command.
	Workload string
	// Check is the per-state oracle, same form as Workload; empty: mount + fsck only.
	Check string
	// Explore selects model, strategy and bounds.
	Explore explore.Options
	// Out is the directory that keeps base.img, fs.pclog and report.json (created if missing).
	Out string
	// CheckTimeout kills a check script (and an fsck) running longer; the state is a violation.
	// 0 means no limit.
	CheckTimeout time.Duration
	// Powercut is the binary that `powercut mark` runs in the workload (default: os.Executable()).
	Powercut string
	// Log receives the harness's progress lines and the workload's output (default io.Discard).
	Log io.Writer
	// OnViolation is called for each violation as soon as it is known (deterministic order).
	OnViolation func(explore.Found)
	// SectorSize is the logical sector size of the recording's loop device (losetup
	// --sector-size), recorded in the log header: the unit of tearing. 0: 512.
	SectorSize int
	// Recording and RecordingBase, when set, are a pclog and its base image kept by an earlier
	// run: they are explored again (with this Check) without mkfs or recording.
	Recording, RecordingBase string
}

// Result is what a run produced.
type Result struct {
	Out, Base, LogPath string
	// Ops is the number of records in the log.
	Ops int
	// Record and Explore are the wall times of the two phases.
	RecordTime, ExploreTime time.Duration
	Report                  *explore.Report
}

// ErrToolMissing: a program the run needs is not installed.
var ErrToolMissing = errors.New("tool not installed")

// DefaultSize is the disk size used when none is given: large enough for each file system's
// minimum (xfs refuses less than 300 MiB) and small enough to stay cheap.
func DefaultSize(fs string) int64 {
	switch fs {
	case "xfs":
		return 300 << 20
	case "btrfs":
		return 256 << 20
	}
	return 64 << 20
}

// Tools returns the programs a run on fs needs (for skip checks and error messages).
func Tools(fs string) []string {
	common := []string{"losetup", "mount", "umount"}
	switch fs {
	case "ext4":
		return append(common, "mkfs.ext4", "e2fsck")
	case "xfs":
		return append(common, "mkfs.xfs", "xfs_repair")
	case "btrfs":
		return append(common, "mkfs.btrfs", "btrfs")
	}
	return nil
}

func (c *Config) validate() error {
	switch c.FS {
	case "ext4", "xfs", "btrfs":
	default:
		return fmt.Errorf("unknown file system %q (want ext4, xfs or btrfs)", c.FS)
	}
	if c.Workload == "" && c.Recording == "" {
		return errors.New("a workload (or an earlier recording) is required")
	}
	if c.SectorSize != 0 && c.SectorSize != 512 && c.SectorSize != 4096 {
		return fmt.Errorf("sector size %d: want 512 or 4096", c.SectorSize)
	}
	if c.Size == 0 {
		c.Size = DefaultSize(c.FS)
	}
	if c.Size%fuserec.SectorSize != 0 || c.Size < 16<<20 {
		return fmt.Errorf("disk size %d: want a multiple of 512 of at least 16 MiB", c.Size)
	}
	if os.Geteuid() != 0 {
		return errors.New("crash-testing a kernel file system needs root (loop devices, mount, FUSE)")
	}
	for _, t := range Tools(c.FS) {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%w: crash-testing %s needs %s", ErrToolMissing, c.FS, t)
		}
	}
	if !scratch.Available() {
		return errors.New("crash-testing a kernel file system needs FUSE (/dev/fuse)")
	}
	if c.FS == "btrfs" && c.Explore.Jobs > 1 {
		// Every crash image carries the same btrfs fsid; the kernel keys devices by fsid and will
		// not mount two of them at once. One state at a time is correct, if slower.
		c.Explore.Jobs = 1
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// MountHintOpts are the -o options of the command a report gives to mount a rebuilt crash
// state as it was checked.
func (c *Config) MountHintOpts() string {
	if o := c.checkMountOpts(); o != "" {
		return "loop," + o
	}
	return "loop"
}

// checkMountOpts are the options crash states are mounted with: the user's, plus nouuid for xfs
// so that several states (same UUID) can be mounted by parallel jobs.
func (c *Config) checkMountOpts() string {
	if c.FS != "xfs" {
		return c.MountOpts
	}
	if c.MountOpts == "" {
		return "nouuid"
	}
	return c.MountOpts + ",nouuid"
}

// Run records the workload and explores its crash states. A non-nil Result is returned whenever
// the recording finished, also with an exploration error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var res *Result
	work, err := leftovers.MkdirTemp("powercut-fs-work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	binDir, err := powercutBinDir(work, cfg.Powercut)
	if err != nil {
		return nil, err
	}
	extraEnv := []string{"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")}
	if cfg.Recording != "" {
		res = &Result{Out: cfg.Out, Base: cfg.RecordingBase, LogPath: cfg.Recording}
	} else {
		if res, err = record(ctx, cfg, work, extraEnv); err != nil {
			return res, err
		}
	}

	l, err := pclog.Open(res.LogPath)
	if err != nil {
		return res, err
	}
	defer l.Close()
	res.Ops = len(l.Entries)
	fmt.Fprintf(cfg.Log, "powercut fs: recorded %d operations in %s; exploring\n", res.Ops, res.RecordTime.Round(time.Millisecond))
	base, err := os.Open(res.Base)
	if err != nil {
		return res, err
	}
	defer base.Close()
	// Not ctx: scratch.New would close the directory from its own goroutine on cancellation,
	// while a check may still hold a crash state mounted from it; the deferred Close runs after
	// Explore returned, i.e. after every check released its mount and loop device.
	dir, err := scratch.New(context.Background())
	if err != nil {
		return res, fmt.Errorf("scratch files: %w", err)
	}
	defer dir.Close()
	chk := &FSChecker{Dir: dir, FS: cfg.FS, MountOpts: cfg.checkMountOpts(), Script: cfg.Check, Timeout: cfg.CheckTimeout, Env: extraEnv}
	t1 := time.Now()
	rep, err := explore.Explore(ctx, explore.Source{Log: l, Bases: map[uint16]io.ReaderAt{0: base}}, cfg.Explore, chk, cfg.OnViolation)
	res.ExploreTime = time.Since(t1)
	res.Report = rep
	if err != nil {
		return res, fmt.Errorf("explore: %w", err)
	}
	return res, nil
}

// record makes the base image and records the workload on it (steps 1 to 3) into cfg.Out.
func record(ctx context.Context, cfg Config, work string, extraEnv []string) (*Result, error) {
	if cfg.Out == "" {
		d, err := os.MkdirTemp("", "powercut-fs-"+cfg.FS+"-")
		if err != nil {
			return nil, err
		}
		cfg.Out = d
	} else if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return nil, err
	}
	res := &Result{Out: out, Base: filepath.Join(out, BaseName), LogPath: filepath.Join(out, LogName)}
	t0 := time.Now()
	fmt.Fprintf(cfg.Log, "powercut fs: mkfs.%s on a %d-byte base image %s\n", cfg.FS, cfg.Size, res.Base)
	if err := mkfs(ctx, cfg, res.Base); err != nil {
		return nil, err
	}
	if err := recordWorkload(ctx, cfg, res, work, extraEnv); err != nil {
		return nil, err
	}
	res.RecordTime = time.Since(t0)
	return res, nil
}

// Validate checks a configuration before anything is created (flags, root, tools, FUSE).
func (c *Config) Validate() error { return c.validate() }

// powercutBinDir makes `powercut` resolvable in the workload's PATH: a directory holding a link
// named powercut to the running binary (whatever its own name, e.g. a test binary).
func powercutBinDir(work, exe string) (string, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return "", fmt.Errorf("locating the powercut binary for the workload: %w", err)
		}
	}
	dir := filepath.Join(work, "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(exe, filepath.Join(dir, "powercut")); err != nil {
		return "", err
	}
	return dir, nil
}

func mkfs(ctx context.Context, cfg Config, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(cfg.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("creating base image: %w", err)
	}
	var args []string
	switch cfg.FS {
	case "ext4":
		args = []string{"-F", "-q"}
	case "xfs", "btrfs":
		args = []string{"-f", "-q"}
	}
	if cfg.SectorSize == 4096 {
		// A file system's blocks must not be smaller than the device's sectors: mkfs on a file
		// cannot see the loop device's sector size, so say it.
		switch cfg.FS {
		case "ext4":
			args = append(args, "-b", "4096")
		case "xfs":
			args = append(args, "-s", "size=4096")
		case "btrfs":
			args = append(args, "--sectorsize", "4096")
		}
	}
	args = append(args, strings.Fields(cfg.MkfsOpts)...)
	args = append(args, path)
	out, code, err := checkers.Run(ctx, 0, os.Environ(), "mkfs."+cfg.FS, args...)
	if err != nil {
		return fmt.Errorf("mkfs.%s: %w", cfg.FS, err)
	}
	if code != 0 {
		return fmt.Errorf("mkfs.%s %s exited %d: %s", cfg.FS, strings.Join(args, " "), code, strings.TrimSpace(out))
	}
	return nil
}

// recordWorkload runs step 2 and 3. Every resource it takes is released before it returns.
func recordWorkload(ctx context.Context, cfg Config, res *Result, work string, extraEnv []string) (err error) {
	recMnt := filepath.Join(work, "rec")
	if err := os.Mkdir(recMnt, 0o700); err != nil {
		return err
	}
	rec, err := fuserec.Start(ctx, fuserec.Options{Mount: recMnt, Log: res.LogPath, Base: res.Base, SectorSize: cfg.SectorSize})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rec.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("stopping the recorder: %w", cerr)
		}
	}()
	sock := filepath.Join(work, "control.sock")
	stopCtl, err := control.Start(context.Background(), sock, rec)
	if err != nil {
		return err
	}
	defer stopCtl()

	m, mout, err := mountImage(ctx, cfg.FS, rec.Path(), cfg.MountOpts, cfg.SectorSize)
	if err != nil {
		return fmt.Errorf("mounting the fresh %s: %w %s", cfg.FS, err, strings.TrimSpace(mout))
	}
	defer func() {
		if rerr := m.Release(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	env := append(os.Environ(), extraEnv...)
	env = append(env, "POWERCUT_MNT="+m.Dir, control.EnvSocket+"="+sock, "POWERCUT_FS="+cfg.FS)
	fmt.Fprintf(cfg.Log, "powercut fs: running workload %s on %s (%s on %s)\n", cfg.Workload, m.Dir, cfg.FS, m.Loop)
	wout, code, err := checkers.Run(ctx, 0, env, shellArgs(cfg.Workload)[0], shellArgs(cfg.Workload)[1:]...)
	if wout != "" {
		fmt.Fprint(cfg.Log, indent(wout, "  workload| "))
	}
	if err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("workload %s exited %d (see its output above)", cfg.Workload, code)
	}
	if err := m.Release(); err != nil {
		return fmt.Errorf("unmounting after the workload: %w", err)
	}
	return nil
}

// shellArgs turns a script path or a shell command into an argv.
func shellArgs(s string) []string {
	if fi, err := os.Stat(s); err == nil && fi.Mode().IsRegular() {
		abs, _ := filepath.Abs(s)
		if fi.Mode().Perm()&0o111 != 0 {
			return []string{abs}
		}
		return []string{"/bin/sh", abs}
	}
	return []string{"/bin/sh", "-c", s}
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix) + "\n"
}
