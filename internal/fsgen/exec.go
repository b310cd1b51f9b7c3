package fsgen

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// OpError is returned by Run when an operation of the workload fails: the workload is invalid on
// this file system (or the file system refused it), which the harness reports as such and never
// as a crash bug.
type OpError struct {
	Index  int    // index in Workload.Actions
	Action string // the action in script form
	Err    error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("action %d (%s): %v", e.Index, e.Action, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// ExecOptions tune Run.
type ExecOptions struct {
	// Mark is called after each persistence point returns, with PointName(n) (the recorder's
	// mark). An error stops the run.
	Mark func(name string) error
	// Guarantees selects what each persistence point promises (Trace.Points[i].Promised). Its
	// zero value promises nothing (validation runs need no promises).
	Guarantees Guarantees
	// NoSnapshots skips the snapshots (tmpfs validation only needs the syscalls' results).
	NoSnapshots bool
	// Tmpfs substitutes the operations tmpfs cannot run for their nearest equivalent: O_DIRECT
	// is dropped if open(2) refuses it (tmpfs before Linux 6.6), FALLOC_FL_ZERO_RANGE becomes a
	// hole punch plus, without KEEP_SIZE, a size extension. Only the validator sets it.
	Tmpfs bool
}

// State is the tree after an action (States[0]: before the first).
type State struct {
	After string `json:"after"`
	Tree  Tree   `json:"tree"`
}

// Point is one persistence point as executed.
type Point struct {
	N        int      `json:"n"`
	Mark     string   `json:"mark"`
	Action   int      `json:"action"`
	State    int      `json:"state"` // index in Trace.States: the tree right after the point
	Promised []Expect `json:"promised"`
}

// Trace is what Run observed: what the oracle needs after a crash.
type Trace struct {
	ID     string  `json:"id"`
	FS     string  `json:"fs"`
	States []State `json:"states"`
	Points []Point `json:"points"`
}

// Run executes w in the directory root (the mount point of the file system under test), issuing
// each syscall directly. After each persistence point returns, it calls opts.Mark, then
// snapshots the tree; it snapshots after every other action too, because a crash after the last
// mark may land any later operation and the oracle must know each object's later versions.
func Run(ctx context.Context, w *Workload, root string, opts ExecOptions) (*Trace, error) {
	tr := &Trace{ID: w.ID(), FS: opts.Guarantees.FS}
	snap := func(after string) error {
		if opts.NoSnapshots {
			return nil
		}
		t, err := Snapshot(root)
		if err != nil {
			return fmt.Errorf("snapshot after %s: %w", after, err)
		}
		tr.States = append(tr.States, State{After: after, Tree: t})
		return nil
	}
	if err := snap("start"); err != nil {
		return nil, err
	}
	for i, a := range w.Actions {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		desc := Command(a.Op)
		if err := execOp(root, a.Op, opts.Tmpfs); err != nil {
			return nil, &OpError{Index: i, Action: desc, Err: err}
		}
		if a.Point > 0 && opts.Mark != nil {
			if err := opts.Mark(PointName(a.Point)); err != nil {
				return nil, fmt.Errorf("mark %s: %w", PointName(a.Point), err)
			}
		}
		if err := snap(desc); err != nil {
			return nil, err
		}
		if a.Point > 0 {
			p := Point{N: a.Point, Mark: PointName(a.Point), Action: i, State: len(tr.States) - 1}
			if !opts.NoSnapshots {
				p.Promised = opts.Guarantees.Promise(a.Op, tr.States[len(tr.States)-1].Tree)
			}
			tr.Points = append(tr.Points, p)
		}
	}
	return tr, nil
}

// symlinkTarget is the relative target the symlink at link gets for the mount path target.
func symlinkTarget(target, link string) string {
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return target
	}
	return rel
}

func fill(n int64, b byte) []byte {
	d := make([]byte, n)
	for i := range d {
		d[i] = b
	}
	return d
}

func withFD(p string, flags int, f func(fd int) error) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	err = f(fd)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func pwriteAll(fd int, d []byte, off int64) error {
	n, err := unix.Pwrite(fd, d, off)
	if err != nil {
		return fmt.Errorf("pwrite: %w", err)
	}
	if n != len(d) {
		return fmt.Errorf("pwrite: short write %d of %d", n, len(d))
	}
	return nil
}

// errMmapBeyondEOF: touching a mapping past the end of the file would raise SIGBUS and kill the
// process; the executor refuses instead.
var errMmapBeyondEOF = errors.New("mmap write beyond the end of the file")

func execOp(root string, o Op, tmpfs bool) error {
	abs := func(p string) string { return filepath.Join(root, p) }
	switch o.Kind {
	case Creat:
		return withFD(abs(o.Path), unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, func(int) error { return nil })
	case Mkdir:
		return unix.Mkdir(abs(o.Path), 0o755)
	case Write:
		return withFD(abs(o.Path), unix.O_WRONLY, func(fd int) error { return pwriteAll(fd, fill(o.Len, o.Fill), o.Off) })
	case DirectWrite:
		return directWrite(abs(o.Path), o, tmpfs)
	case MmapWrite:
		return withFD(abs(o.Path), unix.O_RDWR, func(fd int) error { return mmapWrite(fd, o) })
	case Falloc:
		return withFD(abs(o.Path), unix.O_WRONLY, func(fd int) error { return falloc(fd, o, tmpfs) })
	case Truncate:
		return unix.Truncate(abs(o.Path), o.Off)
	case Link:
		return unix.Link(abs(o.Path), abs(o.Path2))
	case Unlink:
		return unix.Unlink(abs(o.Path))
	case Rename, Replace:
		return unix.Rename(abs(o.Path), abs(o.Path2))
	case Symlink:
		return unix.Symlink(symlinkTarget(o.Path, o.Path2), abs(o.Path2))
	case SetXattr:
		return withFD(abs(o.Path), unix.O_RDONLY, func(fd int) error {
			return unix.Fsetxattr(fd, XattrName, []byte(o.Value), 0)
		})
	case RemoveXattr:
		return withFD(abs(o.Path), unix.O_RDONLY, func(fd int) error { return unix.Fremovexattr(fd, XattrName) })
	case Rmdir:
		return unix.Rmdir(abs(o.Path))
	case Fsync:
		return withFD(abs(o.Path), unix.O_RDONLY, unix.Fsync)
	case Fdatasync:
		return withFD(abs(o.Path), unix.O_RDONLY, unix.Fdatasync)
	case Sync:
		unix.Sync()
		return nil
	case None:
		return nil
	}
	return fmt.Errorf("unknown operation %v", o.Kind)
}

// zeroRangeTmpfs is FALLOC_FL_ZERO_RANGE's visible effect built from what tmpfs supports: the
// range reads as zeros and the size grows to cover it.
func zeroRangeTmpfs(fd int, off, n int64) error {
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("fallocate (zero range as punch hole on tmpfs): %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if off+n > st.Size {
		if err := unix.Ftruncate(fd, off+n); err != nil {
			return fmt.Errorf("ftruncate (zero range on tmpfs): %w", err)
		}
	}
	return nil
}

// directWrite issues o with O_DIRECT (dropped on tmpfs where open refuses it).
func directWrite(p string, o Op, tmpfs bool) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL && tmpfs {
		fd, err = unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("open O_DIRECT: %w", err)
	}
	defer unix.Close(fd)
	// O_DIRECT needs a buffer aligned to the logical block size: an anonymous mapping is
	// page aligned.
	buf, err := unix.Mmap(-1, 0, int(o.Len), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap buffer: %w", err)
	}
	defer unix.Munmap(buf)
	copy(buf, fill(o.Len, o.Fill))
	return pwriteAll(fd, buf, o.Off)
}

// mmapWrite stores o's bytes through a shared mapping of fd and msyncs them.
func mmapWrite(fd int, o Op) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if o.Off+o.Len > st.Size {
		return fmt.Errorf("%w (%d+%d > %d)", errMmapBeyondEOF, o.Off, o.Len, st.Size)
	}
	start := o.Off &^ (pageSize - 1)
	m, err := unix.Mmap(fd, start, int(o.Off+o.Len-start), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	copy(m[o.Off-start:], fill(o.Len, o.Fill))
	serr := unix.Msync(m, unix.MS_SYNC)
	if err := unix.Munmap(m); serr == nil && err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("msync: %w", serr)
	}
	return nil
}

// falloc issues o's fallocate(2) mode on fd (zero range emulated on tmpfs).
func falloc(fd int, o Op, tmpfs bool) error {
	mode := map[FallocMode]uint32{FallocDefault: 0, FallocKeepSize: unix.FALLOC_FL_KEEP_SIZE,
		FallocPunchHole: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE,
		FallocZeroRange: unix.FALLOC_FL_ZERO_RANGE}[o.Mode]
	err := unix.Fallocate(fd, mode, o.Off, o.Len)
	if err == unix.EOPNOTSUPP && tmpfs && o.Mode == FallocZeroRange {
		return zeroRangeTmpfs(fd, o.Off, o.Len)
	}
	if err != nil {
		return fmt.Errorf("fallocate: %w", err)
	}
	return nil
}
