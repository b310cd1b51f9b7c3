package fsharness

import (
	"context"

	"github.com/powercut/powercut/internal/fstool"
)

// mounted is a file system mounted from an image file (fstool.Mounted).
type mounted = fstool.Mounted

// mountImage mounts image through a loop device (fstool.Mount).
func mountImage(ctx context.Context, fsType, image, opts string, sectorSize ...int) (*mounted, string, error) {
	return fstool.Mount(ctx, fsType, image, opts, sectorSize...)
}

func mountKernel(err error) string { return fstool.KernelOf(err) }

func isMountErr(err error) bool { return fstool.IsMountError(err) }

func kernelMessages(dev string) string { return fstool.KernelMessages(dev) }
