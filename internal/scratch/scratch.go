// Package scratch serves crash images as regular files with a throw-away write layer, so that
// external checkers (fsck, mount, an application's oracle) can open, repair and mount a crash
// state without copying the device: the file is a FUSE file whose reads come from the image's
// base and overlay, and whose writes go to an in-memory layer dropped when the file is released.
// The base image is never modified.
//
// Where FUSE is not available (no /dev/fuse, not root and no fusermount3) the Dir falls back to
// writing each image to a temporary file: correct, but it costs a copy of the device per state,
// and says so once on stderr.
package scratch

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/powercut/powercut/internal/infra"
	"github.com/powercut/powercut/internal/leftovers"
	"github.com/powercut/powercut/record"
)

// Image is what a scratch file serves: a crash image.
type Image interface {
	io.ReaderAt
	Size() int64
}

// Dir serves scratch files.
type Dir struct {
	tmp    string
	mnt    string
	server *fuse.Server
	root   *rootNode
	n      atomic.Uint64
	mu     sync.Mutex
	closed bool
	Warn   io.Writer // where to say that the copy fallback is in use (default stderr)
	warned sync.Once
	noFUSE bool
	writes atomic.Int64 // WRITE requests served: what the writeback cache saves is visible in tests
}

type rootNode struct{ fs.Inode }

// Available reports whether FUSE can be used here.
func Available() bool {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return false
	}
	if os.Geteuid() == 0 {
		return true
	}
	_, err := exec.LookPath("fusermount3")
	return err == nil
}

// New mounts a private FUSE directory (or prepares the copy fallback). The caller must Close it,
// after every check using its files has ended.
func New(ctx context.Context) (*Dir, error) {
	tmp, err := leftovers.MkdirTemp("powercut-scratch-")
	if err != nil {
		return nil, err
	}
	d := &Dir{tmp: tmp, Warn: os.Stderr}
	if !Available() || os.Getenv("POWERCUT_NO_FUSE") != "" {
		d.noFUSE = true
		return d, nil
	}
	d.mnt = filepath.Join(tmp, "mnt")
	if err := os.Mkdir(d.mnt, 0o700); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	d.root = &rootNode{}
	// Names come and go (no entry caching); attributes never change (see attrTTL), and a zero
	// attribute timeout in LOOKUP replies would make each path walk cost a GETATTR too.
	to, attr := time.Duration(0), attrTTL
	srv, err := fs.Mount(d.mnt, d.root, &fs.Options{
		EntryTimeout: &to, AttrTimeout: &attr, NegativeTimeout: &to,
		MountOptions: fuse.MountOptions{FsName: "powercut-scratch", Name: "powercut", AllowOther: os.Geteuid() == 0, MaxWrite: 1 << 20, DisableXAttrs: true,
			ExtraCapabilities: writebackCache},
	})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, infra.Wrap("mount the scratch FUSE directory (POWERCUT_NO_FUSE=1 copies each crash image to a file instead: slower, needs no FUSE)", err)
	}
	d.server = srv
	return d, nil
}

// FUSE reports whether files are served through FUSE (false: copy fallback).
func (d *Dir) FUSE() bool { return !d.noFUSE }

// File returns the path of a regular file holding img, writable, backed by a throw-away layer.
// release removes it.
func (d *Dir) File(img Image) (path string, release func(), err error) {
	id := d.n.Add(1)
	name := fmt.Sprintf("state-%d.img", id)
	if d.noFUSE {
		d.warned.Do(func() {
			fmt.Fprintln(d.Warn, "powercut: FUSE is not available: each crash image is copied to a temporary file (slow; run as root with /dev/fuse for copy-free images)")
		})
		p := filepath.Join(d.tmp, name)
		f, err := os.Create(p)
		if err != nil {
			return "", nil, err
		}
		_, err = io.Copy(f, io.NewSectionReader(img, 0, img.Size()))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(p)
			return "", nil, fmt.Errorf("copy crash image to %s: %w", p, err)
		}
		return p, func() { os.Remove(p) }, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return "", nil, fmt.Errorf("scratch directory closed")
	}
	node := &fileNode{size: img.Size(), writes: &d.writes}
	node.store.Store(record.NewCOWStore(img, img.Size()))
	ino := d.root.NewPersistentInode(context.Background(), node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: id + 1})
	d.root.AddChild(name, ino, true)
	return filepath.Join(d.mnt, name), func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.closed {
			d.root.RmChild(name)
		}
		// The inode is persistent (go-fuse keeps it until the mount ends): drop its layer now,
		// or every state checked would keep its written blocks in memory for the whole run.
		node.store.Store(nil)
	}, nil
}

// Close unmounts and removes the directory.
func (d *Dir) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	var err error
	if d.server != nil {
		for i := 0; i < 50; i++ {
			if err = d.server.Unmount(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			// last resort: lazy unmount so nothing is left behind
			_ = exec.Command("umount", "-l", d.mnt).Run()
		}
	}
	os.RemoveAll(d.tmp)
	return err
}

type fileNode struct {
	fs.Inode
	store  atomic.Pointer[record.MemStore] // nil once released
	size   int64
	writes *atomic.Int64
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeAllocater = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
)

// writebackCache asks the kernel to cache writes to scratch files (FUSE_WRITEBACK_CACHE) and send
// them in page-cache batches at writeback, fsync and close, instead of one synchronous WRITE per
// write call, each preceded by a GETATTR (a write-through write drops the cached attributes).
// Journal recovery writes thousands of single blocks: on a populated ext4 image e2fsck's replay
// cost 6,336 WRITEs and 6,323 GETATTRs per crash state, and 19 WRITEs with this (BENCHMARKS.md,
// 2.4x fewer seconds per state). It is safe for the same reason as the read cache (see Open):
// the kernel is the file's only writer, so its page cache is the file's content; what is still
// dirty at close is written back before the close returns, and a file's layer lives until its
// release. One thing moves: a write across the device's end (no file system checker or loop
// device makes one) is taken into the kernel's cache, which grows its idea of the file's size,
// and fails at fsync (ENOSPC) instead of at the write; as after any failed writeback, the open
// file may still show the refused bytes, but the layer never takes them and the next open reads
// the layer (TestWritePastEndFails). The kernel offers the capability since Linux 3.15; where it does
// not, writes stay synchronous.
const writebackCache = fuse.CAP_WRITEBACK_CACHE

// attrTTL is how long the kernel may cache a scratch file's attributes: they never change (the
// size is the device's, Setattr refuses to change it), and without a cache every buffered read
// would cost a GETATTR round trip (the kernel revalidates the size before reading from its cache).
const attrTTL = time.Hour

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o644
	out.Size = uint64(f.size)
	out.Blocks = uint64(f.size+511) / 512
	out.SetTimeout(attrTTL)
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != f.size {
		return syscall.EPERM // a crash image has the device's size
	}
	return f.Getattr(ctx, fh, out)
}

// Open lets the kernel cache the file's pages (no FOPEN_DIRECT_IO): fsck and check scripts read
// a crash image in small scattered blocks, and through the page cache most of them are served
// without a FUSE round trip (a context switch to this process and back; ~20x fewer READs per
// e2fsck run). This is safe because every scratch file is a new inode with a name never reused
// (state-N, N counting up), so no page of another crash state can be in its cache, and the only
// writer of its content is the kernel itself (buffered writes go through the cache to Write;
// O_DIRECT writes of a loop device and hole punching invalidate the range, as on a local file
// system). No FOPEN_KEEP_CACHE: the cache is dropped at every open anyway, so a stale page could
// not outlive a close even if that changed.
func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, 0
}

func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= f.size {
		return fuse.ReadResultData(nil), 0
	}
	n := min(int64(len(dest)), f.size-off)
	st := f.store.Load()
	if st == nil {
		return nil, syscall.EIO // released: nobody may read a removed crash image
	}
	if _, err := st.ReadAt(dest[:n], off); err != nil {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f.writes.Add(1)
	if off < 0 || off+int64(len(data)) > f.size {
		return 0, syscall.ENOSPC
	}
	st := f.store.Load()
	if st == nil {
		return 0, syscall.EIO
	}
	if _, err := st.WriteAt(data, off); err != nil {
		return 0, syscall.EIO
	}
	return uint32(len(data)), 0
}

func (f *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno { return 0 }

func (f *fileNode) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const punch, zero = 0x02, 0x10 // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
	if mode&(punch|zero) == 0 {
		return 0 // plain preallocation: nothing to do, the file is full size
	}
	end := min(int64(off+size), f.size)
	if int64(off) >= end {
		return 0
	}
	st := f.store.Load()
	if st == nil {
		return syscall.EIO
	}
	if err := st.Zero(int64(off), end-int64(off)); err != nil {
		return syscall.EIO
	}
	return 0
}
