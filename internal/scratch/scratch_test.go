package scratch

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"testing"
)

type zeroImage int64

func (z zeroImage) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (z zeroImage) Size() int64                             { return int64(z) }

// TestReleasedFilesFreeTheirLayer writes 8 MiB into each of 40 scratch files in turn, releasing
// each: the memory held afterwards must not grow with the number of files released (a released
// file's copy-on-write layer is dropped, although go-fuse keeps its inode until unmount).
func TestReleasedFilesFreeTheirLayer(t *testing.T) {
	if !Available() {
		t.Skip("needs FUSE (root and /dev/fuse): the copy fallback has no layer to free")
	}
	d, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.FUSE() {
		t.Skip("FUSE mount unavailable")
	}
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
