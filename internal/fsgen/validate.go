package fsgen

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/leftovers"
)

// ErrNoTmpfs is returned by NewValidator when no tmpfs is available: /dev/shm is not a tmpfs and
// mounting a private one needs root.
var ErrNoTmpfs = errors.New("no tmpfs available for workload validation")

// Validator runs workloads on tmpfs to drop the invalid ones before anything is recorded.
//
// What tmpfs cannot validate, and how it is handled (docs/fs-guarantees.md):
//   - O_DIRECT: tmpfs refuses it with EINVAL before Linux 6.6; the direct write is then issued
//     without O_DIRECT (same data, same offsets), so the alignment rules O_DIRECT imposes on the
//     tested file system are not validated there (the generator only emits 4 KiB-aligned ones).
//   - FALLOC_FL_ZERO_RANGE: tmpfs answers EOPNOTSUPP; it is replaced by a hole punch plus the
//     size extension, which has the same visible effect.
//   - Everything a real file system may refuse on its own (ENOSPC, an fallocate mode it lacks,
//     xattrs disabled) is not validated: Run returns an *OpError on the file system under test,
//     which the harness reports as "workload failed", not as a crash bug.
type Validator struct {
	base    string
	mounted bool
}

const tmpfsMagic = 0x01021994

func isTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == tmpfsMagic
}

// NewValidator finds a tmpfs: /dev/shm if it is one, else a private tmpfs mounted on a temporary
// directory (root only). Close releases it.
func NewValidator() (*Validator, error) {
	if isTmpfs("/dev/shm") {
		return &Validator{base: "/dev/shm"}, nil
	}
	dir, err := leftovers.MkdirTemp("powercut-fsgen-tmpfs-")
	if err != nil {
		return nil, fmt.Errorf("validator: %w", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m"); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("%w: /dev/shm is not tmpfs and mount tmpfs on %s: %v", ErrNoTmpfs, dir, err)
	}
	return &Validator{base: dir, mounted: true}, nil
}

// Close unmounts the private tmpfs, if one was mounted.
func (v *Validator) Close() error {
	if !v.mounted {
		return nil
	}
	v.mounted = false
	if err := unix.Unmount(v.base, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("validator: unmount %s: %w", v.base, err)
	}
	return os.Remove(v.base)
}

// Validate runs w in a fresh directory on the tmpfs and returns the *OpError of the first
// operation that failed (nil: the workload is valid). Other errors are the validator's own.
func (v *Validator) Validate(ctx context.Context, w *Workload) error {
	dir, err := os.MkdirTemp(v.base, "fsgen-")
	if err != nil {
		return fmt.Errorf("validator: %w", err)
	}
	defer os.RemoveAll(dir)
	_, err = Run(ctx, w, dir, ExecOptions{NoSnapshots: true, Tmpfs: true})
	return err
}

// Dropped is a workload the validator rejected and why.
type Dropped struct {
	Workload *Workload
	Err      *OpError
}

// Filter returns the workloads of ws that run on tmpfs, in order, and those it dropped.
func (v *Validator) Filter(ctx context.Context, ws []*Workload) (valid []*Workload, dropped []Dropped, err error) {
	for _, w := range ws {
		verr := v.Validate(ctx, w)
		var oe *OpError
		switch {
		case verr == nil:
			valid = append(valid, w)
		case errors.As(verr, &oe):
			dropped = append(dropped, Dropped{Workload: w, Err: oe})
		default:
			return nil, nil, fmt.Errorf("validating %s: %w", w.ID(), verr)
		}
	}
	return valid, dropped, nil
}
