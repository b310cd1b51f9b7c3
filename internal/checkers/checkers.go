// Package checkers holds powercut's built-in crash-state checkers: an arbitrary command (the
// user's oracle) and read-only fsck of ext4, xfs and btrfs images. Each runs on a scratch file
// (internal/scratch): the checker may write (journal replay, repair) without touching the base
// or any other state.
package checkers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/internal/scratch"
)

// Sentinel errors: a file system with no checker, a checker's tool not installed.
var (
	ErrUnknownFS   = errors.New("unknown file system")
	ErrToolMissing = errors.New("tool not installed")
)

// MaxOutput bounds the output kept per violation.
const MaxOutput = fstool.MaxOutput

// Files gives checkers regular files for a candidate's images.
type Files struct{ Dir *scratch.Dir }

// open returns paths per device (sorted by device id) and a release func.
func (f Files) open(c *explore.Candidate) (map[uint16]string, func(), error) {
	paths := map[uint16]string{}
	var rels []func()
	release := func() {
		for _, r := range rels {
			r()
		}
	}
	for dev, img := range c.Images {
		p, rel, err := f.Dir.File(img)
		if err != nil {
			release()
			return nil, nil, err
		}
		paths[dev] = p
		rels = append(rels, rel)
	}
	return paths, release, nil
}

// Env returns the POWERCUT_* environment of a candidate.
func Env(c *explore.Candidate, paths map[uint16]string) []string {
	env := []string{
		"POWERCUT_STATE=" + c.ID,
		"POWERCUT_MODEL=" + c.Model.String(),
		"POWERCUT_LAST_MARK=" + c.LastMark,
		"POWERCUT_COVERED_MARKS=" + strings.Join(c.CoveredMarks, ","),
		"POWERCUT_CRASH_POINT=" + c.Reason,
	}
	devs := make([]int, 0, len(paths))
	for d := range paths {
		devs = append(devs, int(d))
	}
	sort.Ints(devs)
	if len(devs) > 0 {
		env = append(env, "POWERCUT_IMAGE="+paths[uint16(devs[0])])
	}
	for _, d := range devs {
		env = append(env, fmt.Sprintf("POWERCUT_IMAGE_%d=%s", d, paths[uint16(d)]))
	}
	return env
}

// Command runs a shell command per state; exit 0 passes, anything else is a violation.
type Command struct {
	Files
	Cmd     string
	Timeout time.Duration // 0: none
	// Context declares what the command's verdict depends on besides the image (zero value: the
	// last mark and the covered marks); explore checks each distinct (image, context) once.
	Context explore.Reads
}

// Reads implements explore.ContextReader.
func (k *Command) Reads() explore.Reads { return k.Context }

// Check implements explore.Checker.
func (k *Command) Check(ctx context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	paths, release, err := k.open(c)
	if err != nil {
		return nil, err
	}
	defer release()
	out, code, err := Run(ctx, k.Timeout, append(os.Environ(), Env(c, paths)...), "/bin/sh", "-c", k.Cmd)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return []explore.Violation{{Oracle: "check", Detail: fmt.Sprintf("check command exited %s", describeExit(code)), Output: out}}, nil
	}
	return nil, nil
}

func describeExit(code int) string {
	if code == -2 {
		return "after timing out"
	}
	if code < 0 {
		return "on a signal"
	}
	return fmt.Sprintf("with status %d", code)
}

// Run runs a program in its own process group with a timeout (see fstool.Run).
func Run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, int, error) {
	return fstool.Run(ctx, timeout, env, name, args...)
}

// Fsck checks a file system image read-only after replaying its journal into the scratch layer.
type Fsck struct {
	Files
	FS      string // ext4, xfs, btrfs
	Timeout time.Duration
}

// Reads implements explore.ContextReader: fsck verdicts depend on the image only.
func (k *Fsck) Reads() explore.Reads { return explore.ReadsImage }

// NewFsck returns the fsck checker for fs, checking that its tools are installed.
func NewFsck(fsType string, files Files) (*Fsck, error) {
	var tools []string
	switch fsType {
	case "ext4":
		tools = []string{"e2fsck"}
	case "xfs":
		tools = []string{"xfs_repair"}
	case "btrfs":
		tools = []string{"btrfs"}
	default:
		return nil, fmt.Errorf("%w %q (want ext4, xfs or btrfs)", ErrUnknownFS, fsType)
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("%w: checking %s needs %s", ErrToolMissing, fsType, t)
		}
	}
	return &Fsck{Files: files, FS: fsType, Timeout: 5 * time.Minute}, nil
}

// Check implements explore.Checker.
func (k *Fsck) Check(ctx context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	paths, release, err := k.open(c)
	if err != nil {
		return nil, err
	}
	defer release()
	var viols []explore.Violation
	devs := make([]int, 0, len(paths))
	for d := range paths {
		devs = append(devs, int(d))
	}
	sort.Ints(devs)
	for _, d := range devs {
		v, err := k.checkFile(ctx, paths[uint16(d)])
		if err != nil {
			return nil, err
		}
		if v != nil {
			if len(devs) > 1 {
				v.Detail = fmt.Sprintf("device %d: %s", d, v.Detail)
			}
			viols = append(viols, *v)
		}
	}
	return viols, nil
}

func (k *Fsck) checkFile(ctx context.Context, path string) (*explore.Violation, error) {
	env := append(os.Environ(), "LC_ALL=C", "E2FSCK_CONFIG=/dev/null")
	switch k.FS {
	case "ext4":
		// Journal recovery first (what a mount would do), into the scratch layer.
		if out, code, err := Run(ctx, k.Timeout, env, "e2fsck", "-E", "journal_only", "-y", path); err != nil {
			return nil, err
		} else if code >= 8 || code < 0 {
			return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("e2fsck journal recovery exited %s", describeExit(code)), Output: out}, nil
		}
		out, code, err := Run(ctx, k.Timeout, env, "e2fsck", "-fn", path)
		if err != nil {
			return nil, err
		}
		if code != 0 {
			return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("e2fsck -fn exited %s", describeExit(code)), Output: out}, nil
		}
	default:
		return k.checkOther(ctx, env, path)
	}
	return nil, nil
}
