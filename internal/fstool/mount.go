package fstool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/powercut/powercut/internal/leftovers"
)

// mounted is a file system mounted from an image file through a loop device. Its release undoes
// everything it did, in reverse, and must run on every path: it uses no context because the
// caller's may already be cancelled.
type Mounted struct {
	Loop, Dir string
	isMount   bool
	ownDir    bool
}

// Mount attaches image to a loop device (direct I/O, so every block request reaches the
// file as issued) and mounts it at a fresh temporary directory. On error everything it set up is
// already released; mountErr distinguishes "mount(8) refused" (the caller may count it as a
// violation) from tool errors.
func Mount(ctx context.Context, fsType, image, opts string, sectorSize ...int) (_ *Mounted, mountOut string, err error) {
	dir, err := leftovers.MkdirTemp("powercut-fs-mnt-")
	if err != nil {
		return nil, "", err
	}
	// m is released on every failure below. It is not the named result: the error returns set
	// that to nil before deferred calls run, which once leaked the loop device and the directory
	// of every crash state that failed to mount.
	m := &Mounted{Dir: dir, ownDir: true}
	defer func() {
		if err != nil {
			m.Release()
		}
	}()
	if m.Loop, err = Attach(ctx, image, true, sectorSize...); err != nil {
		return nil, "", err
	}
	args := []string{"-t", fsType}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	args = append(args, m.Loop, dir)
	out, code, err := Run(ctx, 0, os.Environ(), "mount", args...)
	// mount(2) may have succeeded even if mount(8) was killed by a cancellation: find out from
	// the kernel, not from the exit status, so release knows whether to unmount.
	m.isMount = IsMountPoint(dir)
	if err != nil {
		return nil, out, fmt.Errorf("mount %s: %w", strings.Join(args, " "), err)
	}
	if code != 0 || !m.isMount {
		// The kernel's reasons, for this loop device only (other devices' messages interleave).
		return nil, out, &MountError{msg: fmt.Sprintf("mount %s exited %d", strings.Join(args, " "), code), kernel: KernelMessages(m.Loop)}
	}
	return m, out, nil
}

// KernelMessages returns the recent kernel log lines that name loop device dev ("/dev/loop7":
// "EXT4-fs (loop7): ...", "XFS (loop7): ...", "BTRFS error (device loop7): ...").
func KernelMessages(dev string) string {
	name := strings.TrimPrefix(dev, "/dev/")
	if name == "" {
		return ""
	}
	out, _, err := Run(context.Background(), 2*time.Second, os.Environ(), "dmesg", "--notime")
	if err != nil {
		return ""
	}
	re := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 12 {
		lines = lines[len(lines)-12:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "kernel log (" + name + "):\n" + strings.Join(lines, "\n") + "\n"
}

// MountError is mount(2) refusing the image; kernel holds what the kernel said about that loop
// device.
type MountError struct{ msg, kernel string }

func (e *MountError) Error() string { return e.msg }

// NewMountError makes the error of a mount(2) refusal; kernel is what the kernel said about the
// device (KernelMessages).
func NewMountError(msg, kernel string) error { return &MountError{msg: msg, kernel: kernel} }

// KernelOf returns the kernel's messages carried by a mount error ("" for other errors).
func KernelOf(err error) string {
	var me *MountError
	if errors.As(err, &me) {
		return me.kernel
	}
	return ""
}

func IsMountError(err error) bool {
	var me *MountError
	return errors.As(err, &me)
}

// Release unmounts (retrying while busy, lazily as a last resort), detaches the loop device and
// removes the directory.
func (m *Mounted) Release() error {
	if m == nil {
		return nil
	}
	var errs []error
	if m.isMount {
		if err := Unmount(m.Dir); err != nil {
			errs = append(errs, err)
		}
		m.isMount = false
	}
	if m.Loop != "" {
		if err := Detach(m.Loop); err != nil {
			errs = append(errs, err)
		}
		m.Loop = ""
	}
	if m.ownDir {
		os.Remove(m.Dir)
		m.ownDir = false
	}
	return errors.Join(errs...)
}

// Unmount unmounts dir. A mount still busy for a moment (a killed check's process exiting, udev
// probing) is retried; if it stays busy it is detached lazily so that nothing stays visible, and
// the error says so.
func Unmount(dir string) error {
	var out []byte
	var err error
	for i := 0; i < 20; i++ {
		out, err = exec.Command("umount", dir).CombinedOutput()
		if err == nil || !IsMountPoint(dir) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = exec.Command("umount", "-l", dir).Run()
	return fmt.Errorf("umount %s: %v: %s (detached lazily)", dir, err, strings.TrimSpace(string(out)))
}

// IsMountPoint reports whether dir is a mount point according to /proc/self/mountinfo.
func IsMountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && leftovers.UnescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}
