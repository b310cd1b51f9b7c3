package verify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"github.com/powercut/powercut/internal/nbdclient"
)

// Target is what the workload runs against. Implementations must allow concurrent calls on
// different blocks (the workload never issues two concurrent operations on the same block).
type Target interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Trim discards [off, off+n): the content is undefined until rewritten, unless the target
	// promises zeros (--trim-zeroes).
	Trim(off, n int64) error
	// WriteZeroes makes [off, off+n) read as zeros.
	WriteZeroes(off, n int64) error
	// Flush makes every write completed before the call durable.
	Flush() error
	Size() int64
}

// Marker is implemented by targets that can label a point of a recording (record.Device): the
// workload marks the flushes it was told had completed, which lets the explore checker catch a
// device that acknowledged a flush without persisting.
type Marker interface {
	Mark(name string) error
}

// TargetOptions configure OpenTarget.
type TargetOptions struct {
	// Direct opens files and block devices with O_DIRECT.
	Direct bool
	// Create creates a regular file of CreateSize bytes when it does not exist.
	Create     bool
	CreateSize int64
}

// ErrNoSize: a target file to create needs a size.
var ErrNoSize = errors.New("no size")

// OpenTarget opens a file, block device or NBD export ("nbd://host[:port][/export]" or
// "nbd+unix:///export?socket=PATH"). The name returned is the basename used for dumps.
func OpenTarget(spec string, o TargetOptions) (t Target, name string, closeFn func() error, err error) {
	if strings.HasPrefix(spec, "nbd://") || strings.HasPrefix(spec, "nbd+unix://") {
		c, err := nbdclient.DialURL(spec)
		if err != nil {
			return nil, "", nil, err
		}
		name = c.ExportName()
		if name == "" {
			name = "nbd"
		}
		return &nbdTarget{c}, sanitize(name), c.Close, nil
	}
	ft, err := OpenFile(spec, o)
	if err != nil {
		return nil, "", nil, err
	}
	return ft, sanitize(filepath.Base(spec)), ft.Close, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

// FileTarget is a regular file or a block device.
type FileTarget struct {
	f     *os.File
	size  int64
	block bool
}

// OpenFile opens path as a target.
func OpenFile(path string, o TargetOptions) (*FileTarget, error) {
	flags := os.O_RDWR
	if o.Direct {
		flags |= syscall.O_DIRECT
	}
	if o.Create {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if o.CreateSize <= 0 {
				return nil, fmt.Errorf("%w: target %s does not exist and no size was given to create it", ErrNoSize, path)
			}
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return nil, fmt.Errorf("create target: %w", err)
			}
			err = f.Truncate(o.CreateSize)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("create target: %w", err)
			}
		}
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open target: %w", err)
	}
	t := &FileTarget{f: f}
	switch {
	case fi.Mode().IsRegular():
		t.size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		t.block = true
		if t.size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("size of block device %s: %w", path, err)
		}
	default:
		f.Close()
		return nil, fmt.Errorf("target %s is neither a regular file nor a block device (%s)", path, fi.Mode().Type())
	}
	return t, nil
}

// ReadAt implements Target.
func (t *FileTarget) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }

// WriteAt implements Target.
func (t *FileTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }

// Size implements Target.
func (t *FileTarget) Size() int64 { return t.size }

// Flush implements Target with fdatasync.
func (t *FileTarget) Flush() error {
	if err := syscall.Fdatasync(int(t.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", t.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (t *FileTarget) Close() error { return t.f.Close() }

const (
	fallocPunchHole = 0x02
	fallocKeepSize  = 0x01
	fallocZeroRange = 0x10
	blkDiscard      = 0x1277
	blkZeroOut      = 0x127f
)

func (t *FileTarget) ioctlRange(req uintptr, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, t.f.Fd(), req, uintptr(unsafe.Pointer(&r))); e != 0 {
		return e
	}
	return nil
}

// Trim implements Target: BLKDISCARD on a block device, a punched hole in a file.
func (t *FileTarget) Trim(off, n int64) error {
	var err error
	if t.block {
		err = t.ioctlRange(blkDiscard, off, n)
	} else {
		err = syscall.Fallocate(int(t.f.Fd()), fallocPunchHole|fallocKeepSize, off, n)
	}
	if err != nil {
		return fmt.Errorf("trim [%d,+%d) of %s: %w", off, n, t.f.Name(), err)
	}
	return nil
}

// WriteZeroes implements Target: BLKZEROOUT on a block device, FALLOC_FL_ZERO_RANGE on a file
// (falling back to writing zeros where the file system lacks it).
func (t *FileTarget) WriteZeroes(off, n int64) error {
	var err error
	if t.block {
		err = t.ioctlRange(blkZeroOut, off, n)
	} else {
		err = syscall.Fallocate(int(t.f.Fd()), fallocZeroRange|fallocKeepSize, off, n)
		if errors.Is(err, syscall.EOPNOTSUPP) {
			z := alignedBuf(int(n))
			_, err = t.f.WriteAt(z, off)
		}
	}
	if err != nil {
		return fmt.Errorf("write zeroes [%d,+%d) of %s: %w", off, n, t.f.Name(), err)
	}
	return nil
}

// alignedBuf returns a zeroed buffer of n bytes aligned to 4096 (for O_DIRECT).
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+n : a+n]
}

type nbdTarget struct{ c *nbdclient.Client }

func (t *nbdTarget) ReadAt(p []byte, off int64) (int, error)  { return t.c.ReadAt(p, off) }
func (t *nbdTarget) WriteAt(p []byte, off int64) (int, error) { return t.c.WriteAt(p, off) }
func (t *nbdTarget) Trim(off, n int64) error                  { return t.c.Trim(off, n) }
func (t *nbdTarget) WriteZeroes(off, n int64) error           { return t.c.WriteZeroes(off, n) }
func (t *nbdTarget) Flush() error                             { return t.c.Flush() }
func (t *nbdTarget) Size() int64                              { return t.c.Size() }
