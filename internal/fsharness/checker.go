package fsharness

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/checkers"
	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/internal/scratch"
)

// FSChecker checks one crash state of a file system the way a reboot after the power cut would
// meet it: mount (the kernel replays its journal or log into the scratch layer), run the user's
// check with POWERCUT_MNT pointing at the mount, unmount, then fsck read-only on the replayed
// image. A mount failure, a failing (or timed-out) check and an fsck error are each a violation.
//
// Why mount before fsck instead of fsck alone: e2fsck can replay a journal itself, but xfs_repair
// and btrfs check cannot (xfs_repair -n refuses a dirty log), and the application's view needs a
// mount anyway; fsck after the unmount then checks exactly what the kernel left.
type FSChecker struct {
	Dir       *scratch.Dir
	FS        string
	MountOpts string
	// Script is the oracle (script path or shell command); empty: mount + fsck only.
	Script string
	// Timeout bounds the check and the fsck (0: none).
	Timeout time.Duration
	// Env is added to the check's environment (PATH with powercut).
	Env []string
	// ScriptReads declares what the script's verdict depends on besides the image (zero value:
	// the last mark and the covered marks).
	ScriptReads explore.Reads
}

// Reads implements explore.ContextReader: without a check script the verdict depends on the
// image alone, so identical images are checked once whatever their marks; with one, what
// ScriptReads declares.
func (k *FSChecker) Reads() explore.Reads {
	if k.Script == "" {
		return explore.ReadsImage
	}
	return k.ScriptReads
}

// Check implements explore.Checker.
func (k *FSChecker) Check(ctx context.Context, c *explore.Candidate) (viols []explore.Violation, err error) {
	path, release, err := scratchImage(k.Dir, c)
	if err != nil {
		return nil, err
	}
	defer release()

	m, mout, err := mountImage(ctx, k.FS, path, k.MountOpts)
	if err != nil {
		if isMountErr(err) && ctx.Err() == nil {
			return []explore.Violation{{Oracle: "mount", Detail: fmt.Sprintf("the crash state does not mount: %v", err), Output: mout + mountKernel(err)}}, nil
		}
		return nil, err
	}
	defer func() {
		if rerr := m.Release(); rerr != nil && err == nil {
			err = fmt.Errorf("releasing the crash state's mount: %w", rerr)
		}
	}()
	if k.Script != "" {
		env := append(os.Environ(), k.Env...)
		env = append(env, checkers.Env(c, map[uint16]string{0: path})...)
		env = append(env, "POWERCUT_MNT="+m.Dir, "POWERCUT_FS="+k.FS)
		args := shellArgs(k.Script)
		out, code, err := checkers.Run(ctx, k.Timeout, env, args[0], args[1:]...)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", k.Script, err)
		}
		switch {
		case code == -2:
			viols = append(viols, explore.Violation{Oracle: "check", Detail: fmt.Sprintf("check timed out after %s (killed)", k.Timeout), Output: out})
		case code != 0:
			viols = append(viols, explore.Violation{Oracle: "check", Detail: fmt.Sprintf("check exited %d", code), Output: out})
		}
	}
	if err := m.Release(); err != nil {
		return nil, fmt.Errorf("unmounting the crash state: %w", err)
	}
	if v, err := k.fsck(ctx, path); err != nil {
		return nil, err
	} else if v != nil {
		viols = append(viols, *v)
	}
	return viols, nil
}

func (k *FSChecker) fsck(ctx context.Context, path string) (*explore.Violation, error) {
	argv := fstool.FsckCommand(k.FS, path)
	env := append(os.Environ(), "LC_ALL=C", "E2FSCK_CONFIG=/dev/null")
	out, code, err := checkers.Run(ctx, k.Timeout, env, argv[0], argv[1:]...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	switch {
	case code == -2:
		return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("%s timed out after %s", strings.Join(argv[:len(argv)-1], " "), k.Timeout), Output: out}, nil
	case code != 0:
		return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("%s exited %d", strings.Join(argv[:len(argv)-1], " "), code), Output: out}, nil
	}
	return nil, nil
}

// scratchImage serves the one device's crash image of c as a scratch file (the fs checkers'
// states have exactly device 0).
func scratchImage(dir *scratch.Dir, c *explore.Candidate) (string, func(), error) {
	img, ok := c.Images[0]
	if !ok || len(c.Images) != 1 {
		return "", nil, fmt.Errorf("fs checker: want exactly one device 0, state has %d", len(c.Images))
	}
	path, release, err := dir.File(img)
	if err != nil {
		return "", nil, fmt.Errorf("scratch file: %w", err)
	}
	return path, release, nil
}
