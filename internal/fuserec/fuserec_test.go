package fuserec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

func startRec(t *testing.T, opts Options) *Recorder {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	if opts.Mount == "" {
		opts.Mount = filepath.Join(dir, "mnt")
		if err := os.Mkdir(opts.Mount, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if opts.Log == "" {
		opts.Log = filepath.Join(dir, "rec.pclog")
	}
	r, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); assertNoFUSEMount(t, opts.Mount) })
	return r
}

func assertNoFUSEMount(t *testing.T, mnt string) {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == mnt {
			t.Errorf("mount left behind: %s", l)
		}
	}
}

func TestFileOperationsRecorded(t *testing.T) {
	r := startRec(t, Options{Size: 1 << 20})
	f, err := os.OpenFile(r.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != 1<<20 {
		t.Fatalf("stat: %v size %d", err, fi.Size())
	}
	data := bytes.Repeat([]byte("abcdefgh"), 512) // 4 KiB
	if _, err := f.WriteAt(data, 8192); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8192, 1024); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 9216, 512); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 1536), data[1536:]...)
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from written/discarded content")
	}
	// Errors: unaligned write, write past the end, size change.
	if _, err := f.WriteAt([]byte("x"), 3); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unaligned write: %v, want EINVAL", err)
	}
	if _, err := f.WriteAt(make([]byte, 1024), 1<<20-512); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write past the end: %v, want ENOSPC", err)
	}
	if err := f.Truncate(4096); err == nil {
		t.Error("truncate succeeded on a fixed-size disk")
	}
	if err := r.Mark("m1"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l := stopAndOpen(t, r)
	var kinds []string
	for _, e := range l.Entries {
		kinds = append(kinds, fmt.Sprintf("%s@%d+%d", e.Kind, e.Offset, e.Length))
	}
	wantKinds := "WRITE@8192+4096 FLUSH@0+0 DISCARD@8192+1024 WRITE_ZEROES@9216+512 MARK@0+0"
	if g := strings.Join(kinds, " "); g != wantKinds {
		t.Fatalf("log entries:\n got %s\nwant %s", g, wantKinds)
	}
	if l.Header.Source != "fuse" || l.Header.Devices[0].Size != 1<<20 {
		t.Fatalf("header %+v", l.Header)
	}
}

// TestConcurrentWritesOverlap writes from several goroutines at once through the FUSE file and
// checks that some submit/complete intervals in the log overlap: the recorder captures the real
// concurrency instead of serialising requests (which would hide writes in flight during a flush).
func TestConcurrentWritesOverlap(t *testing.T) {
	r := startRec(t, Options{Size: 64 << 20})
	const workers, perWorker = 8, 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(r.Path(), os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := bytes.Repeat([]byte{byte(w)}, 256<<10)
			for i := 0; i < perWorker; i++ {
				off := int64(w*perWorker+i) % 256 * int64(len(buf))
				if _, err := f.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l := stopAndOpen(t, r)
	if len(l.Entries) < workers*perWorker {
		t.Fatalf("%d entries, want at least %d", len(l.Entries), workers*perWorker)
	}
	overlaps := 0
	var prev *pclog.Entry
	for i := range l.Entries {
		e := &l.Entries[i]
		// File order is completion order: an entry submitted before the previous one completed
		// was in flight at the same time.
		if prev != nil && e.Submit < prev.Complete {
			overlaps++
		}
		if i > 0 && e.Complete <= l.Entries[i-1].Complete {
			t.Fatalf("entry %d: completion %d not increasing", i, e.Complete)
		}
		prev = e
	}
	t.Logf("%d entries, %d overlap their predecessor", len(l.Entries), overlaps)
	if overlaps == 0 {
		t.Fatal("no two writes overlapped in time: requests were serialised")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestExt4ThroughLoop is the end-to-end path the fs harness relies on: mkfs.ext4 through a loop
// device on disk.img, mount, write, sync, umount, detach; then the log holds writes and flushes,
// and replaying every operation onto the base yields a file system e2fsck accepts. The base is
// checked to be untouched.
func TestExt4ThroughLoop(t *testing.T) {
	testenv.RequireLoop(t)
	testenv.RequireTool(t, "mkfs.ext4", "e2fsck", "mount", "umount")
	dir := t.TempDir()
	const size = 64 << 20
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, size); err != nil {
		t.Fatal(err)
	}
	r := startRec(t, Options{Base: base})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := fstool.Attach(ctx, r.Path(), true)
	if err != nil {
		t.Fatal(err)
	}
	detached := false
	defer func() {
		if !detached {
			fstool.Detach(dev)
		}
	}()
	run(t, "mkfs.ext4", "-q", "-F", dev)
	mnt := filepath.Join(dir, "fs")
	os.Mkdir(mnt, 0o755)
	run(t, "mount", dev, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	for i := 0; i < 5; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 10000*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "sync")
	run(t, "umount", mnt)
	mounted = false
	if err := fstool.Detach(dev); err != nil {
		t.Fatal(err)
	}
	detached = true
	l := stopAndOpen(t, r)
	counts := map[pclog.Kind]int{}
	for _, e := range l.Entries {
		counts[e.Kind]++
	}
	t.Logf("entries by kind: %v", counts)
	if counts[pclog.KindWrite] == 0 || counts[pclog.KindFlush] == 0 {
		t.Fatalf("want writes and flushes, got %v", counts)
	}
	b, ok := l.Header.Base(0)
	if !ok {
		t.Fatal("no base recorded in the header")
	}
	bf, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	_, sum, err := pclog.HashBase(bf)
	bf.Close()
	if err != nil || sum != b.Hash || b.Size != size {
		t.Fatalf("base modified or misrecorded: header %+v, now %s (%v)", b, sum, err)
	}

	// Replay everything, in completion order, onto a copy of the base.
	replay := filepath.Join(dir, "replay.img")
	run(t, "cp", "--sparse=always", base, replay)
	out, err := os.OpenFile(replay, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range l.Entries {
		switch e.Kind {
		case pclog.KindWrite:
			p := make([]byte, e.Length)
			if err := l.ReadData(i, p, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := out.WriteAt(p, e.Offset); err != nil {
				t.Fatal(err)
			}
		case pclog.KindWriteZeroes, pclog.KindDiscard:
			if _, err := out.WriteAt(make([]byte, e.Length), e.Offset); err != nil {
				t.Fatal(err)
			}
		}
	}
	out.Close()
	run(t, "e2fsck", "-fn", replay)
}

// TestUnmountOnCancel: cancelling the context removes the mount even while a loop device still
// holds disk.img (the lazy unmount + abort path), and Close reports why.
func TestUnmountOnCancel(t *testing.T) {
	testenv.RequireLoop(t)
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Start(ctx, Options{Mount: mnt, Log: filepath.Join(dir, "l.pclog"), Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := fstool.Attach(ctx, r.Path(), true)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	ours := fstool.Backing(dev)
	cancel()
	select {
	case <-r.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("FUSE server still running 30s after cancel")
	}
	if err := fstool.Detach(dev); err != nil {
		t.Error(err)
	}
	err = r.Close()
	t.Logf("Close after forced unmount: %v", err)
	if err == nil {
		t.Error("Close hid that disk.img was still in use")
	}
	assertNoFUSEMount(t, mnt)
	// The device number may already serve another test's file (other packages run in
	// parallel): what must be gone is a loop device on this recorder's disk.img.
	// (a file whose FUSE mount went away is shown as "/disk.img").
	if b := fstool.Backing(dev); b != "" && (b == ours || strings.HasPrefix(b, mnt) || b == "/disk.img") {
		t.Errorf("%s still attached to %s", dev, b)
	}
}

// stopAndOpen stops the recorder and opens its log (closed when the test ends).
func stopAndOpen(t *testing.T, r *Recorder) *pclog.Log {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(r.opts.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
