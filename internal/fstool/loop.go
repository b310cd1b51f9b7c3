// Package fstool is powercut's one home for the tools a kernel file system is driven with: loop
// devices (attach, detach with retries while busy), mount and unmount (retrying, lazily as a last
// resort), the kernel's messages about one loop device, the read-only fsck of each file system,
// and running a tool in its own process group with a timeout. The fs harness (internal/fsharness)
// and the built-in checkers (internal/checkers) both use it.
//
// Why losetup and not the LOOP_CONFIGURE ioctl: losetup handles the loop-control races (another
// process taking the same free device), partition scanning and autoclear the way every admin
// expects, and its errors are readable. The callers need only attach, detach, and a guarantee
// that a device they attached is gone when they return.
package fstool

import (
	"context"
	"fmt"
	"github.com/powercut/powercut/internal/infra"
	"os/exec"
	"strings"
	"time"
)

// Attach binds file to a free loop device and returns its path (/dev/loopN). With directIO the
// device uses O_DIRECT on the file (losetup --direct-io=on): no page cache of the loop driver
// between the block layer and the file, so every block request reaches the file as it was issued.
//
// A sectorSize (at most one, 512 or 4096) sets the device's logical sector size
// (losetup --sector-size): the kernel then never issues a request smaller than it.
func Attach(ctx context.Context, file string, directIO bool, sectorSize ...int) (string, error) {
	args := []string{"--find", "--show"}
	if directIO {
		args = append(args, "--direct-io=on")
	}
	if len(sectorSize) > 0 && sectorSize[0] != 0 {
		args = append(args, "--sector-size", fmt.Sprint(sectorSize[0]))
	}
	args = append(args, file)
	// Not CommandContext: losetup killed by a cancellation between binding the device and
	// printing its name would leak a device nobody knows. It takes milliseconds; the
	// cancellation is honoured before it starts and by the caller after it returns.
	if err := ctx.Err(); err != nil {
		return "", err
	}
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		return "", infra.Wrap("attach a loop device", fmt.Errorf("losetup %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup %s: unexpected output %q", strings.Join(args, " "), dev)
	}
	return dev, nil
}

// Detach detaches dev. A device still held open (a mount that is going away, udev probing it)
// answers EBUSY for a moment, so Detach retries for a few seconds; losetup -d also sets
// autoclear, so the device disappears when its last user lets go even if every retry failed.
// It runs without a context on purpose: clean-up must happen after the caller was cancelled.
func Detach(dev string) error {
	var last error
	for i := 0; i < 40; i++ {
		out, err := exec.Command("losetup", "-d", dev).CombinedOutput()
		if err == nil {
			return nil
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "No such device") || strings.Contains(msg, "No such device or address") {
			return nil
		}
		last = fmt.Errorf("losetup -d %s: %w: %s", dev, err, msg)
		time.Sleep(50 * time.Millisecond * time.Duration(min(i+1, 5)))
	}
	return last
}

// Backing returns the file behind dev, or "" when dev is not attached.
func Backing(dev string) string {
	out, err := exec.Command("losetup", "--noheadings", "--output", "BACK-FILE", dev).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
