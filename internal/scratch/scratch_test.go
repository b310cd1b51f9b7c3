package scratch

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"testing"

	"github.com/powercut/powercut/internal/leftovers"
)

// TestMain removes this test process's own temporary directory (where New puts its mounts), as
// the CLI does at the end of a command.
func TestMain(m *testing.M) {
	code := m.Run()
	leftovers.Close()
	os.Exit(code)
}

// fuseDir returns a scratch directory served through FUSE, closed at the end of the test, or
// skips the test (why: what the copy fallback would not show).
func fuseDir(t *testing.T, why string) *Dir {
	t.Helper()
	if !Available() {
		t.Skipf("needs FUSE (root and /dev/fuse): %s", why)
	}
	d, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if !d.FUSE() {
		t.Skipf("FUSE mount unavailable: %s", why)
	}
	return d
}

type zeroImage int64

func (z zeroImage) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (z zeroImage) Size() int64                             { return int64(z) }

// TestReleasedFilesFreeTheirLayer writes 8 MiB into each of 40 scratch files in turn, releasing
// each: the memory held afterwards must not grow with the number of files released (a released
// file's copy-on-write layer is dropped, although go-fuse keeps its inode until unmount).
func TestReleasedFilesFreeTheirLayer(t *testing.T) {
	d := fuseDir(t, "the copy fallback has no layer to free")
	chunk := bytes.Repeat([]byte{0xAB}, 8<<20)
	var ms runtime.MemStats
	heap := func() uint64 { runtime.GC(); runtime.ReadMemStats(&ms); return ms.HeapAlloc }
	before := heap()
	for i := 0; i < 40; i++ {
		p, release, err := d.File(zeroImage(16 << 20))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(chunk, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		release()
	}
	after := heap()
	if grown := int64(after) - int64(before); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB after 40 released files of 8 MiB written each: released layers are kept", grown>>20)
	}
}

// pattern is an image whose every byte is known: byte i is i*7+i>>12 (mod 256).
type pattern int64

func (p pattern) ReadAt(b []byte, off int64) (int, error) {
	for i := range b {
		o := off + int64(i)
		b[i] = byte(o*7 + o>>12)
	}
	return len(b), nil
}
func (p pattern) Size() int64 { return int64(p) }

// TestWritesAreBatchedAndReadBack writes 2,048 1 KiB blocks of a 2 MiB region in shuffled order
// into a scratch file, one pwrite each (what journal recovery does to inode tables and bitmaps),
// the way fsck does it (fsync, close), then reopens the file: every written block and every byte
// around them must read back, and the kernel must have sent the writes in batches (the
// writeback cache), not one WRITE each.
func TestWritesAreBatchedAndReadBack(t *testing.T) {
	d := fuseDir(t, "the copy fallback has no kernel cache")
	const size = 32 << 20
	img := pattern(size)
	p, release, err := d.File(img)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	want := make([]byte, size)
	img.ReadAt(want, 0)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2048
	region := int64(5<<20 + 512) // not page-aligned: the first and last pages are partly old data
	for i := 0; i < n; i++ {
		off := region + int64(i*1237%n)*1024 // every block of the region once, shuffled
		blk := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 512)
		if _, err := f.WriteAt(blk, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], blk)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if w := d.writes.Load(); w >= n/4 {
		t.Errorf("%d WRITE requests for %d writes: the kernel is not batching them (writeback cache off)", w, n)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("byte %d reads %#x after reopening, want %#x", i, got[i], want[i])
			}
		}
	}
}

// TestWritePastEndFails: a crash image has the device's size, and its layer never takes a write
// past the end. With the writeback cache the kernel accepts the write into its page cache (and
// grows its idea of the size) and the error comes at fsync: the write or the fsync must fail,
// and the device's bytes must read back unchanged once the file is opened again.
func TestWritePastEndFails(t *testing.T) {
	d := fuseDir(t, "the copy fallback is a plain file")
	const size = 1 << 20
	p, release, err := d.File(pattern(size))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, werr := f.WriteAt([]byte("straddles the end"), size-5)
	serr := f.Sync()
	if werr == nil && serr == nil {
		t.Error("a write across the device's end succeeded through write and fsync")
	}
	t.Logf("write: %v, fsync: %v", werr, serr)
	f.Close()
	// Opened again (the kernel drops the file's cache at open), the file shows the layer.
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	got := make([]byte, size)
	if _, err := g.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	pattern(size).ReadAt(want, 0)
	if !bytes.Equal(got, want) {
		t.Error("the device's bytes changed after a refused write across its end")
	}
}
