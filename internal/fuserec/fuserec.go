// Package fuserec records the block I/O of a kernel file system without device-mapper or nbd: it
// serves one regular file, disk.img, through FUSE; `losetup --direct-io=on` turns that file into a
// block device, and every request the loop driver issues on it arrives here as a FUSE request:
//
//	FUSE WRITE                              -> WRITE
//	FUSE FSYNC                              -> FLUSH (the loop driver's REQ_PREFLUSH; FUA arrives
//	                                           as FSYNC, WRITE, FSYNC because loop advertises no FUA)
//	FUSE FALLOCATE(PUNCH_HOLE|KEEP_SIZE)    -> DISCARD (also how loop sends a write-zeroes that may
//	                                           unmap; recording it as DISCARD is the cautious reading)
//	FUSE FALLOCATE(ZERO_RANGE[|KEEP_SIZE])  -> WRITE_ZEROES
//
// Each request is recorded with record.Device.Do: the submit number is taken before the store is
// touched and the completion number after, so the exact order survives while several loop worker
// threads (and the kernel's async direct I/O) have requests in flight at once. That overlap is what
// the durability model needs: a write still in flight while a FLUSH ran is not covered by it.
//
// Why the FUSE file is opened with FOPEN_DIRECT_IO and the mount has no writeback cache: with a
// page cache between the loop device and us, the kernel would merge writes between flushes and
// send them in its own order, and intermediate versions of a block (the states a crash can leave)
// would never reach the recorder. Asynchronous direct I/O and parallel direct writes are enabled so
// that loop's requests are not serialised by the FUSE inode lock.
package fuserec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// FileName is the name of the recorded disk inside the mount.
const FileName = "disk.img"

// SectorSize is the recorded device's sector size. The loop driver's logical block size on a
// FUSE backing file is 512, so every request it sends is 512-aligned.
const SectorSize = 512

// attrTimeout: the file's size and mode never change while mounted, so the kernel may cache its
// attributes for a long time; a minute bounds staleness of the (meaningless) times.
const attrTimeout = time.Minute

// Options configure a recording.
type Options struct {
	// Mount is an existing empty directory; disk.img appears inside it.
	Mount string
	// Log is the pclog to create.
	Log string
	// Size of the disk in bytes (a multiple of 512). With Base, 0 means the base's size.
	Size int64
	// Base, if set, is an image the disk starts from; it is opened read-only and never modified
	// (writes land in memory, copy-on-write), and recorded in the pclog header by size and hash.
	Base string
	// Debug logs every FUSE request (go-fuse's debug output) to stderr.
	Debug bool
	// SectorSize is the logical sector size of the loop device the disk will be used through
	// (losetup --sector-size), recorded in the log header: 512 (default) or 4096.
	SectorSize int
}

// Recorder is a running FUSE recording.
type Recorder struct {
	opts   Options
	rec    *record.Recorder
	dev    *record.Device
	store  record.Store
	base   *os.File
	server *fuse.Server
	connID string // fusectl connection id, to abort a connection that cannot be unmounted

	served      chan struct{} // closed when the FUSE server loop ended
	stopCtx     func() bool
	unmountOnce sync.Once
	unmountErr  error
	closeMu     sync.Mutex
	closed      bool
	closeErr    error
	start       time.Time
}

// Start mounts the recording file system at opts.Mount and returns once disk.img can be opened.
// The mount is removed by Close, and also when ctx is cancelled (Close is then still needed to
// release the log, and reports any error).
func Start(ctx context.Context, opts Options) (_ *Recorder, err error) {
	if opts.Mount == "" || opts.Log == "" {
		return nil, errors.New("fuserec: mount directory and log path are required")
	}
	r := &Recorder{opts: opts, served: make(chan struct{}), start: time.Now()}
	defer func() {
		if err != nil {
			if r.base != nil {
				r.base.Close()
			}
		}
	}()
	var bases []pclog.BaseRef
	if opts.Base != "" {
		f, err := os.Open(opts.Base)
		if err != nil {
			return nil, fmt.Errorf("fuserec: base image: %w", err)
		}
		r.base = f
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("fuserec: base image: %w", err)
		}
		if opts.Size == 0 {
			opts.Size = fi.Size()
		}
		if fi.Size() != opts.Size {
			return nil, fmt.Errorf("fuserec: base image %s has %d bytes, the disk is %d bytes (they must match)", opts.Base, fi.Size(), opts.Size)
		}
		_, sum, err := pclog.HashBase(io.NewSectionReader(f, 0, fi.Size()))
		if err != nil {
			return nil, fmt.Errorf("fuserec: hashing base image %s: %w", opts.Base, err)
		}
		abs, _ := filepath.Abs(opts.Base)
		bases = append(bases, pclog.BaseRef{Device: 0, Size: fi.Size(), Hash: sum, Path: abs})
		r.store = record.NewCOWStore(f, opts.Size)
	} else {
		if opts.Size <= 0 {
			return nil, errors.New("fuserec: disk size is required without a base image")
		}
		r.store = record.NewMemStore(opts.Size)
	}
	if opts.SectorSize == 0 {
		opts.SectorSize = SectorSize
	}
	if opts.SectorSize != 512 && opts.SectorSize != 4096 {
		return nil, fmt.Errorf("fuserec: sector size %d: want 512 or 4096", opts.SectorSize)
	}
	if opts.Size%int64(opts.SectorSize) != 0 {
		return nil, fmt.Errorf("fuserec: disk size %d is not a multiple of %d", opts.Size, opts.SectorSize)
	}
	r.opts = opts
	h := pclog.Header{
		Version: pclog.FormatVersion,
		Devices: []pclog.Device{{ID: 0, Name: FileName, Size: opts.Size, SectorSize: opts.SectorSize}},
		Bases:   bases,
		Source:  "fuse",
		Note:    "FUSE file behind losetup --direct-io=on: FSYNC recorded as FLUSH, PUNCH_HOLE as DISCARD, ZERO_RANGE as WRITE_ZEROES; FUA arrives as FLUSH, WRITE, FLUSH",
	}
	rec, err := record.Create(opts.Log, h, []record.Store{r.store})
	if err != nil {
		return nil, fmt.Errorf("fuserec: creating log %s: %w", opts.Log, err)
	}
	r.rec = rec
	r.dev = rec.Device(0)

	root := &fs.Inode{}
	node := &diskNode{r: r}
	timeout := attrTimeout
	neg := time.Duration(0)
	server, err := fs.Mount(opts.Mount, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "powercut",
			Name:   "powercut-rec",
			// One FUSE WRITE per block request up to 1 MiB (the kernel's FUSE maximum): a
			// request split in pieces would be recorded as several smaller atomic writes.
			MaxWrite: fuse.MAX_KERNEL_WRITE,
			// Mount with mount(2) as root, fusermount3 otherwise.
			DirectMount:       true,
			Debug:             opts.Debug,
			DisableXAttrs:     true,
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			// The writeback cache is never requested (go-fuse only enables it on demand).
			DisabledCapabilities: fuse.CAP_WRITEBACK_CACHE,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &neg,
		OnAdd: func(ctx context.Context) {
			ch := root.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
			root.AddChild(FileName, ch, true)
		},
	})
	if err != nil {
		rec.Close()
		return nil, fmt.Errorf("fuserec: mounting FUSE at %s: %w", opts.Mount, err)
	}
	r.server = server
	var st unix.Stat_t
	if err := unix.Stat(opts.Mount, &st); err == nil {
		// fusectl names a connection by the kernel's dev_t encoding (major<<20 | minor).
		r.connID = fmt.Sprint(uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)))
	}
	go func() {
		server.Wait()
		close(r.served)
	}()
	r.stopCtx = context.AfterFunc(ctx, func() { r.unmount() })
	return r, nil
}

// Path returns the path of disk.img.
func (r *Recorder) Path() string { return filepath.Join(r.opts.Mount, FileName) }

// Size returns the disk size.
func (r *Recorder) Size() int64 { return r.opts.Size }

// Recording returns the underlying recording (for marks and fault triggers).
func (r *Recorder) Recording() *record.Recorder { return r.rec }

// Mark records a mark (implements control.Marker).
func (r *Recorder) Mark(name string) error { return r.rec.Mark(name) }

// Done is closed once the FUSE file system is no longer served (unmounted or aborted).
func (r *Recorder) Done() <-chan struct{} { return r.served }

// unmount removes the mount, guaranteed. A clean unmount first. If disk.img is still held, the
// usual culprit is a loop device the caller did not detach: those are detached (losetup -d; a
// loop device still mounted only gets autoclear) and the unmount retried. As a last resort the
// mount point is lazily unmounted and the FUSE connection aborted through fusectl, so no FUSE
// mount or serving goroutine outlives the recorder; pending and later I/O on the aborted
// connection fails with ENOTCONN in the kernel, which is the honest outcome for a disk that went
// away. The returned error says which fallback was needed.
func (r *Recorder) unmount() error {
	r.unmountOnce.Do(func() { r.unmountErr = r.doUnmount() })
	return r.unmountErr
}

func (r *Recorder) doUnmount() error {
	err := r.server.Unmount()
	if err == nil {
		<-r.served
		return nil
	}
	uerr := fmt.Errorf("fuserec: unmounting %s: %w (disk.img is still in use)", r.opts.Mount, err)
	if devs := loopsOf(r.Path()); len(devs) > 0 {
		var failed []string
		for _, d := range devs {
			if err := fstool.Detach(d); err != nil {
				failed = append(failed, fmt.Sprintf("%s (%v: a file system on it is probably still mounted; it detaches when unmounted)", d, err))
			}
		}
		uerr = fmt.Errorf("fuserec: unmounting %s: disk.img was still attached to %s (detached it)", r.opts.Mount, strings.Join(devs, ", "))
		if len(failed) > 0 {
			uerr = fmt.Errorf("fuserec: unmounting %s: disk.img is still attached to %s", r.opts.Mount, strings.Join(failed, "; "))
		}
		if r.server.Unmount() == nil {
			<-r.served
			return uerr
		}
	}
	_ = unix.Unmount(r.opts.Mount, unix.MNT_DETACH)
	select {
	case <-r.served:
		return uerr
	case <-time.After(time.Second):
	}
	if aerr := abortConn(r.connID); aerr != nil {
		uerr = fmt.Errorf("%w; aborting the FUSE connection: %v", uerr, aerr)
	}
	select {
	case <-r.served:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%w; the FUSE connection did not shut down", uerr)
	}
	return uerr
}

// loopsOf lists the loop devices backed by path (losetup -j).
func loopsOf(path string) []string {
	out, err := exec.Command("losetup", "--noheadings", "--output", "NAME", "-j", path).Output()
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

const fusectlDir = "/sys/fs/fuse/connections"

// abortConn aborts FUSE connection id through fusectl, mounting fusectl for the moment if the
// system has not (and unmounting it again, so the machine is left as found).
func abortConn(id string) error {
	if id == "" {
		return errors.New("connection id unknown")
	}
	abort := filepath.Join(fusectlDir, id, "abort")
	if _, err := os.Stat(abort); err != nil {
		if merr := unix.Mount("fusectl", fusectlDir, "fusectl", 0, ""); merr != nil {
			return fmt.Errorf("mounting fusectl at %s: %w", fusectlDir, merr)
		}
		defer unix.Unmount(fusectlDir, 0)
	}
	return os.WriteFile(abort, []byte("1"), 0)
}

// Close unmounts the file system (see unmount), closes the log and releases the base. It is
// idempotent; the first call's error is returned again by later calls.
func (r *Recorder) Close() error {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.closed {
		return r.closeErr
	}
	r.closed = true
	r.stopCtx()
	err := r.unmount()
	if cerr := r.rec.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("fuserec: closing log: %w", cerr)
	}
	if r.base != nil {
		r.base.Close()
	}
	r.closeErr = err
	return err
}

// diskNode is disk.img.
type diskNode struct {
	fs.Inode
	r *Recorder
}

var (
	_ fs.NodeGetattrer  = (*diskNode)(nil)
	_ fs.NodeSetattrer  = (*diskNode)(nil)
	_ fs.NodeOpener     = (*diskNode)(nil)
	_ fs.NodeReader     = (*diskNode)(nil)
	_ fs.NodeWriter     = (*diskNode)(nil)
	_ fs.NodeFsyncer    = (*diskNode)(nil)
	_ fs.NodeFlusher    = (*diskNode)(nil)
	_ fs.NodeAllocater  = (*diskNode)(nil)
	_ fs.NodeStatfser   = (*diskNode)(nil)
	_ fs.NodeGetxattrer = (*diskNode)(nil)
)

func (n *diskNode) fill(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o600
	a.Nlink = 1
	a.Size = uint64(n.r.opts.Size)
	a.Blocks = uint64(n.r.opts.Size / 512)
	a.Blksize = 4096
	t := n.r.start
	a.SetTimes(&t, &t, &t)
}

// Getattr reports the fixed size.
func (n *diskNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	out.SetTimeout(attrTimeout)
	return 0
}

// Setattr accepts changes of times and mode (ignored: tools touch them) but refuses to change the
// size: a disk does not grow or shrink, and an O_TRUNC open must not wipe it.
func (n *diskNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.r.opts.Size {
		return syscall.EINVAL
	}
	n.fill(&out.Attr)
	out.SetTimeout(attrTimeout)
	return 0
}

// Open returns no handle: all state is in the node. FOPEN_DIRECT_IO keeps the page cache out
// (see the package doc); parallel direct writes stop the kernel serialising them on the inode lock.
func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

// Read serves reads from the store (reads are not recorded).
func (n *diskNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := n.r.opts.Size
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if _, err := n.r.dev.ReadAt(dest, off); err != nil {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest), 0
}

// checkRange validates a recorded operation's range: it must be sector-aligned (the loop driver
// always is; a misaligned write could not be represented as a block operation) and inside the
// disk (a disk cannot grow: ENOSPC, as a full block device answers).
func (n *diskNode) checkRange(off, length int64) syscall.Errno {
	if off < 0 || length <= 0 || off%SectorSize != 0 || length%SectorSize != 0 {
		return syscall.EINVAL
	}
	if off+length > n.r.opts.Size || off+length < off {
		return syscall.ENOSPC
	}
	return 0
}

// errno maps a recording failure to EIO: the workload must see the write fail (the record is not
// in the log, so the crash states never contain it), exactly as a dying disk reports it.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return syscall.EIO
}

// Write records a WRITE. The data is copied before the submit point: go-fuse reuses the buffer.
func (n *diskNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if e := n.checkRange(off, int64(len(data))); e != 0 {
		return 0, e
	}
	buf := append([]byte(nil), data...)
	err := n.r.dev.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: int64(len(buf)), Data: buf}, func() error {
		_, err := n.r.store.WriteAt(buf, off)
		return err
	})
	if err != nil {
		return 0, errno(err)
	}
	return uint32(len(data)), 0
}

// Fsync records a FLUSH (the loop driver's REQ_PREFLUSH).
func (n *diskNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	return errno(n.r.dev.Do(&pclog.Record{Kind: pclog.KindFlush}, n.r.store.Sync))
}

// Flush is close(2), not a block flush: nothing to record.
func (n *diskNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

// Allocate records DISCARD and WRITE_ZEROES. Plain preallocation of a range inside the disk
// changes nothing a reader sees and is accepted without a record; anything that would change the
// size, or modes a block device never sends, is refused.
func (n *diskNode) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	o, l := int64(off), int64(size)
	switch mode {
	case 0, unix.FALLOC_FL_KEEP_SIZE:
		if o < 0 || l <= 0 || o+l > n.r.opts.Size {
			return syscall.ENOSPC
		}
		return 0
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE:
		if e := n.checkRange(o, l); e != 0 {
			return e
		}
		return errno(n.r.dev.Do(&pclog.Record{Kind: pclog.KindDiscard, Offset: o, Length: l}, func() error {
			return n.r.store.Zero(o, l)
		}))
	case unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		if e := n.checkRange(o, l); e != 0 {
			return e
		}
		return errno(n.r.dev.Do(&pclog.Record{Kind: pclog.KindWriteZeroes, Offset: o, Length: l}, func() error {
			return n.r.store.Zero(o, l)
		}))
	}
	return syscall.EOPNOTSUPP
}

// Statfs reports a file system exactly as large as the disk, so tools that check free space
// before creating a loop device are not confused.
func (n *diskNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = uint64(n.r.opts.Size / 4096)
	out.NameLen = 255
	return 0
}

// Getxattr: no extended attributes (answered here so the kernel stops asking about security.*).
func (n *diskNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}
