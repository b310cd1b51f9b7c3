package checkers

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/powercut/powercut/explore"
)

// checkOther checks xfs and btrfs. Neither tool replays its log in user space read-only, so the
// log is replayed the way the kernel does after a crash: mount the scratch file through a loop
// device and unmount it (the writes land in the throw-away layer), then run the read-only check.
func (k *Fsck) checkOther(ctx context.Context, env []string, path string) (*explore.Violation, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("--fsck %s replays the log by mounting the crash image, which needs root", k.FS)
	}
	if v, err := MountAndRun(ctx, k.FS, path, "", nil); err != nil || v != nil {
		return v, err
	}
	var out string
	var code int
	var err error
	switch k.FS {
	case "xfs":
		out, code, err = Run(ctx, k.Timeout, env, "xfs_repair", "-n", "-f", path)
	case "btrfs":
		out, code, err = Run(ctx, k.Timeout, env, "btrfs", "check", "--readonly", path)
	}
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("%s check exited %s", k.FS, describeExit(code)), Output: out}, nil
	}
	return nil, nil
}

// MountAndRun attaches path to a loop device, mounts it (replaying the journal/log), runs fn on
// the mount point if non-nil, then unmounts and detaches, whatever happens. A mount failure is
// returned as a violation, and so is fn's.
func MountAndRun(ctx context.Context, fsType, path, opts string, fn func(mnt string) (*explore.Violation, error)) (*explore.Violation, error) {
	mnt, err := os.MkdirTemp("", "powercut-mnt-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	loop, out, code, err := losetup(ctx, path)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("losetup %s failed: %s", path, strings.TrimSpace(out))
	}
	defer detach(loop)
	args := []string{"-t", fsType}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	args = append(args, loop, mnt)
	mout, mcode, err := Run(ctx, 0, os.Environ(), "mount", args...)
	if err != nil {
		return nil, err
	}
	if mcode != 0 {
		return &explore.Violation{Oracle: "mount", Detail: fmt.Sprintf("mount -t %s failed (exit %d)", fsType, mcode), Output: mout}, nil
	}
	var v *explore.Violation
	if fn != nil {
		v, err = fn(mnt)
	}
	uout, ucode, uerr := Run(context.Background(), 0, os.Environ(), "umount", mnt)
	if uerr == nil && ucode != 0 {
		// busy: lazy unmount so nothing is left behind
		_, _, _ = Run(context.Background(), 0, os.Environ(), "umount", "-l", mnt)
		if err == nil && v == nil {
			err = fmt.Errorf("umount %s: %s", mnt, strings.TrimSpace(uout))
		}
	}
	return v, err
}

func losetup(ctx context.Context, path string) (string, string, int, error) {
	out, code, err := Run(ctx, 0, os.Environ(), "losetup", "--find", "--show", "--direct-io=on", path)
	if err == nil && code != 0 {
		// FUSE files may refuse O_DIRECT on some kernels: fall back to buffered loop.
		out, code, err = Run(ctx, 0, os.Environ(), "losetup", "--find", "--show", path)
	}
	return strings.TrimSpace(out), out, code, err
}

func detach(loop string) {
	_, _, _ = Run(context.Background(), 0, os.Environ(), "losetup", "-d", loop)
}
