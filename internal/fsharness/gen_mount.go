package fsharness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/internal/infra"
	"github.com/powercut/powercut/internal/leftovers"
)

// quickMount is a file system mounted from an image through a loop device set up with ioctls
// and mount(2) directly. A generated run mounts ten or so images per workload, hundreds of
// workloads in a row: losetup, mount(8) and umount(8) cost four process starts per image and
// their waits for udev, which made mounting the bulk of a workload's time (BENCHMARKS.md).
// The device is configured with autoclear, so it goes away with the last close even if a
// release is interrupted.
type quickMount struct {
	dir    string
	loopFd int
	loop   string
	image  string
	isMnt  bool
}

// mountOptionFlags are the mount(8) options that are mount(2) flags, not file-system data.
var mountOptionFlags = map[string]struct {
	set   uintptr
	clear bool
}{
	"ro": {unix.MS_RDONLY, false}, "rw": {unix.MS_RDONLY, true},
	"nosuid": {unix.MS_NOSUID, false}, "suid": {unix.MS_NOSUID, true},
	"nodev": {unix.MS_NODEV, false}, "dev": {unix.MS_NODEV, true},
	"noexec": {unix.MS_NOEXEC, false}, "exec": {unix.MS_NOEXEC, true},
	"sync": {unix.MS_SYNCHRONOUS, false}, "async": {unix.MS_SYNCHRONOUS, true},
	"dirsync": {unix.MS_DIRSYNC, false}, "noatime": {unix.MS_NOATIME, false}, "atime": {unix.MS_NOATIME, true},
	"nodiratime": {unix.MS_NODIRATIME, false}, "diratime": {unix.MS_NODIRATIME, true},
	"relatime": {unix.MS_RELATIME, false}, "norelatime": {unix.MS_RELATIME, true},
	"strictatime": {unix.MS_STRICTATIME, false}, "lazytime": {unix.MS_LAZYTIME, false},
	"nolazytime": {unix.MS_LAZYTIME, true}, "silent": {unix.MS_SILENT, false}, "loud": {unix.MS_SILENT, true},
	"defaults": {0, false}, "loop": {0, false},
}

// splitMountOptions turns a mount -o argument into mount(2) flags and file-system data.
func splitMountOptions(opts string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if f, ok := mountOptionFlags[o]; ok {
			if f.clear {
				flags &^= f.set
			} else {
				flags |= f.set
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// attachLoop binds image to a free loop device with direct I/O and autoclear. It retries when
// another process takes the free device first.
func attachLoop(image string) (fd int, dev string, err error) {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open %s: %w", image, err)
	}
	defer f.Close()
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", infra.Wrap("loop device", err)
	}
	defer unix.Close(ctl)
	for try := 0; try < 50; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return -1, "", infra.Wrap("loop device", fmt.Errorf("LOOP_CTL_GET_FREE: %w", err))
		}
		dev = fmt.Sprintf("/dev/loop%d", n)
		lfd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
				time.Sleep(time.Millisecond)
				continue
			}
			return -1, "", infra.Wrap("loop device", fmt.Errorf("open %s: %w", dev, err))
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO | unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopConfigure(lfd, &cfg)
		if err == nil {
			return lfd, dev, nil
		}
		unix.Close(lfd)
		if !errors.Is(err, unix.EBUSY) {
			return -1, "", infra.Wrap("loop device", fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err))
		}
	}
	return -1, "", infra.Wrap("loop device", errors.New("no free loop device after 50 attempts"))
}

// mountQuick attaches image to a loop device and mounts it on a fresh directory. A refusal of
// mount(2) is a *mountError (the crash state does not mount); everything else is the
// harness's own failure. On error everything is already released.
func mountQuick(ctx context.Context, fsType, image, opts string) (_ *quickMount, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir, err := leftovers.MkdirTemp("powercut-fs-mnt-")
	if err != nil {
		return nil, err
	}
	// Released on every failure below; not the named result, which the error returns set to nil
	// before deferred calls run.
	m := &quickMount{dir: dir, loopFd: -1, image: image}
	defer func() {
		if err != nil {
			m.release()
		}
	}()
	if m.loopFd, m.loop, err = attachLoop(image); err != nil {
		return nil, err
	}
	flags, data := splitMountOptions(opts)
	if err := unix.Mount(m.loop, dir, fsType, flags, data); err != nil {
		return nil, fstool.NewMountError(fmt.Sprintf("mount -t %s -o %q %s: %v", fsType, opts, m.loop, err), kernelMessages(m.loop))
	}
	m.isMnt = true
	return m, nil
}

// release unmounts (retrying while busy for a moment, lazily as a last resort), detaches the
// loop device and removes the directory. It uses no context: clean-up must run after a
// cancellation too.
func (m *quickMount) release() error {
	if m == nil {
		return nil
	}
	var errs []error
	if m.isMnt {
		var err error
		for i := 0; i < 50; i++ {
			if err = unix.Unmount(m.dir, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err == unix.EBUSY {
			_ = unix.Unmount(m.dir, unix.MNT_DETACH)
			errs = append(errs, fmt.Errorf("umount %s: busy (detached lazily)", m.dir))
		} else if err != nil && err != unix.EINVAL {
			errs = append(errs, fmt.Errorf("umount %s: %w", m.dir, err))
		}
		m.isMnt = false
	}
	if m.loopFd >= 0 {
		// Clears now if nobody else holds the device; otherwise autoclear detaches it with the
		// last close.
		_ = unix.IoctlSetInt(m.loopFd, unix.LOOP_CLR_FD, 0)
		unix.Close(m.loopFd)
		m.loopFd = -1
		if err := waitDetached(m.loop, m.image); err != nil {
			errs = append(errs, err)
		}
	}
	if m.dir != "" {
		os.Remove(m.dir)
		m.dir = ""
	}
	return errors.Join(errs...)
}

// waitDetached waits until dev no longer serves image. The last close clears an autoclear
// device, but that close may be someone else's (the block layer's own release of the unmounted
// file system's device can finish after umount(2) returned): the caller's next step (closing
// the FUSE file behind it, unmounting the recorder) must not find the file still held.
func waitDetached(dev, image string) error {
	sys := "/sys/block/" + strings.TrimPrefix(dev, "/dev/") + "/loop/backing_file"
	abs, _ := filepath.Abs(image)
	for i := 0; i < 1000; i++ {
		b, err := os.ReadFile(sys)
		if err != nil || strings.TrimSpace(string(b)) != abs {
			return nil
		}
		time.Sleep(time.Duration(min(i+1, 10)) * time.Millisecond)
	}
	return fmt.Errorf("loop device %s still serves %s after 10s", dev, image)
}
