package checkers

import (
	"context"
	"fmt"
	"os"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fstool"
)

// checkOther checks xfs and btrfs. Neither tool replays its log in user space read-only, so the
// log is replayed the way the kernel does after a crash: mount the scratch file through a loop
// device and unmount it (the writes land in the throw-away layer), then run the read-only check.
func (k *Fsck) checkOther(ctx context.Context, env []string, path string) (*explore.Violation, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("checking %s replays the log by mounting the crash image, which needs root", k.FS)
	}
	if v, err := MountAndRun(ctx, k.FS, path, "", nil); err != nil || v != nil {
		return v, err
	}
	argv := fstool.FsckCommand(k.FS, path)
	out, code, err := Run(ctx, k.Timeout, env, argv[0], argv[1:]...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return &explore.Violation{Oracle: "fsck", Detail: fmt.Sprintf("%s check exited %s", k.FS, describeExit(code)), Output: out}, nil
	}
	return nil, nil
}

// MountAndRun mounts path through a loop device (replaying the journal/log), runs fn on the
// mount point if non-nil, then unmounts and detaches, whatever happens (fstool.Mount). A mount
// failure is returned as a violation carrying the kernel's messages about that device, and so
// is fn's.
func MountAndRun(ctx context.Context, fsType, path, opts string, fn func(mnt string) (*explore.Violation, error)) (_ *explore.Violation, err error) {
	m, out, err := fstool.Mount(ctx, fsType, path, opts)
	if fstool.IsMountError(err) && ctx.Err() == nil {
		return &explore.Violation{Oracle: "mount", Detail: err.Error(), Output: out + fstool.KernelOf(err)}, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := m.Release(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if fn == nil {
		return nil, nil
	}
	return fn(m.Dir)
}
