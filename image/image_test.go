package image_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"pgregory.net/rapid"

	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

const ss = 512

// opByte is the content of byte k of write op i in the fake log: it depends on both so that a
// read from the wrong op or at the wrong offset shows.
func opByte(i int, k int64) byte {
	x := uint64(i+1)*0x9e3779b97f4a7c15 ^ uint64(k)*0xbf58476d1ce4e5b9
	x ^= x >> 29
	return byte(x) | 1 // never zero, so zeros from the wrong source show too
}

// fakeData serves op data and rejects reads that are not inside a WRITE op.
type fakeData struct {
	ops []model.Op
	err error // first bad request
}

func (f *fakeData) ReadData(i int, p []byte, off int64) error {
	if i < 0 || i >= len(f.ops) || f.ops[i].Kind != pclog.KindWrite || off < 0 || off+int64(len(p)) > f.ops[i].Len {
		err := fmt.Errorf("bad ReadData(op %d, len %d, off %d)", i, len(p), off)
		if f.err == nil {
			f.err = err
		}
		return err
	}
	for k := range p {
		p[k] = opByte(i, off+int64(k))
	}
	return nil
}

// memWriterAt is a fixed-size file in memory.
type memWriterAt []byte

func (m memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("WriteAt(len %d, off %d) outside %d bytes", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

type imageCase struct {
	size    int64
	base    io.ReaderAt
	baseBuf []byte // nil when base is nil
	data    *fakeData
	im      *image.Image
	want    []byte // naive image
	covered int64  // naive overlay bytes
	bounds  []int64
}

// drawImageCase draws a device, a base (none, shorter, exact or longer than the device) and a
// sequential history of writes, write-zeroes, discards and flushes, builds the crash image of a
// random state at the end of the history through the model (shared layer + per-state delta),
// and the naive image by applying the landed ops to a byte array.
func drawImageCase(t *rapid.T) *imageCase {
	size := rapid.Int64Range(1, 3<<20/ss).Draw(t, "sectors") * ss
	c := &imageCase{size: size}
	switch rapid.IntRange(0, 3).Draw(t, "base") {
	case 0: // no base: zeros
	case 1: // shorter than the device, not sector-aligned
		c.baseBuf = make([]byte, rapid.Int64Range(0, size-1).Draw(t, "baseLen"))
	case 2:
		c.baseBuf = make([]byte, size)
	case 3:
		c.baseBuf = make([]byte, size+rapid.Int64Range(1, 4096).Draw(t, "baseExtra"))
	}
	if c.baseBuf != nil {
		for k := range c.baseBuf {
			c.baseBuf[k] = byte(k*7+k>>9) | 0x80
		}
		c.base = bytes.NewReader(c.baseBuf)
	}

	n := rapid.IntRange(0, 30).Draw(t, "ops")
	ops := make([]model.Op, n)
	sectors := size / ss
	for i := range ops {
		o := model.Op{Dev: 0, Submit: uint64(2*i + 1), Complete: uint64(2*i + 2)}
		switch rapid.IntRange(0, 9).Draw(t, fmt.Sprintf("kind%d", i)) {
		case 0:
			o.Kind = pclog.KindFlush
		case 1, 2:
			o.Kind = pclog.KindWriteZeroes
		case 3:
			o.Kind = pclog.KindDiscard
		default:
			o.Kind = pclog.KindWrite
		}
		if o.Kind != pclog.KindFlush {
			start := rapid.Int64Range(0, sectors-1).Draw(t, fmt.Sprintf("start%d", i))
			l := rapid.Int64Range(1, min(sectors-start, 1<<20/ss+16)).Draw(t, fmt.Sprintf("len%d", i))
			o.Off, o.Len = start*ss, l*ss
			if rapid.Bool().Draw(t, fmt.Sprintf("fua%d", i)) {
				o.Flags |= pclog.FlagFUA
			}
		}
		ops[i] = o
	}
	h, err := model.NewHistory(ops, []pclog.Device{{ID: 0, Name: "d", Size: size, SectorSize: ss}})
	if err != nil {
		t.Fatalf("NewHistory: %v", err)
	}
	ep := h.Epoch(model.Reorder, model.DiscardZero, model.Point{Index: 0, T: uint64(2*n + 1)})
	st := &model.State{Model: model.Reorder, Policy: model.DiscardZero, Point: 0}
	dropped := map[int]bool{}
	for _, i := range ep.Pending {
		if rapid.Bool().Draw(t, fmt.Sprintf("drop%d", i)) {
			st.Dropped = append(st.Dropped, i)
			dropped[i] = true
		}
	}
	ovs, err := ep.Overlay(st)
	if err != nil {
		t.Fatalf("Overlay: %v", err)
	}

	c.want = make([]byte, size)
	copy(c.want, c.baseBuf)
	cov := make([]bool, sectors)
	for i, o := range ops {
		if o.Kind == pclog.KindFlush || dropped[i] {
			continue
		}
		for k := int64(0); k < o.Len; k++ {
			if o.Kind == pclog.KindWrite {
				c.want[o.Off+k] = opByte(i, k)
			} else {
				c.want[o.Off+k] = 0
			}
		}
		for s := o.Off / ss; s < (o.Off+o.Len)/ss; s++ {
			cov[s] = true
		}
		c.bounds = append(c.bounds, o.Off, o.Off+o.Len)
	}
	for _, b := range cov {
		if b {
			c.covered += ss
		}
	}
	c.bounds = append(c.bounds, 0, size)
	if len(c.baseBuf) < int(size) {
		c.bounds = append(c.bounds, int64(len(c.baseBuf)))
	}
	c.data = &fakeData{ops: ops}
	c.im = image.New(size, c.base, c.data, ovs[0])
	return c
}

// checkRead reads len bytes at off and compares with the naive image.
func (c *imageCase) checkRead(t *rapid.T, off int64, n int) {
	p := bytes.Repeat([]byte{0xee}, n) // stale content a read must overwrite
	got, err := c.im.ReadAt(p, off)
	if off >= c.size {
		if got != 0 || err != io.EOF {
			t.Fatalf("ReadAt(len %d, off %d) at/after end %d = (%d, %v), want (0, EOF)", n, off, c.size, got, err)
		}
		return
	}
	want := int(min(int64(n), c.size-off))
	switch {
	case got != want:
		t.Fatalf("ReadAt(len %d, off %d) = %d bytes (err %v), want %d", n, off, got, err, want)
	case want < n && err != io.EOF:
		t.Fatalf("ReadAt(len %d, off %d) short read past the end: err %v, want EOF", n, off, err)
	case want == n && err != nil:
		t.Fatalf("ReadAt(len %d, off %d): %v", n, off, err)
	}
	if !bytes.Equal(p[:got], c.want[off:off+int64(got)]) {
		for k := range got {
			if p[k] != c.want[off+int64(k)] {
				t.Fatalf("ReadAt(len %d, off %d): byte %d (device offset %d) = %#x, want %#x (extents %+v)",
					n, off, k, off+int64(k), p[k], c.want[off+int64(k)], c.im.Extents())
			}
		}
	}
	if c.data.err != nil {
		t.Fatalf("ReadAt(len %d, off %d): %v", n, off, c.data.err)
	}
}

// TestImageReadAt: random reads (many starting near extent, gap and base-end boundaries, many
// crossing them, some running past the end) match the naive image; the overlay byte count and
// extents agree with the landed ops.
func TestImageReadAt(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawImageCase(t)
		if c.im.Size() != c.size {
			t.Fatalf("Size() = %d, want %d", c.im.Size(), c.size)
		}
		if b := c.im.OverlayBytes(); b != c.covered {
			t.Fatalf("OverlayBytes() = %d, want %d", b, c.covered)
		}
		var xb int64
		for _, e := range c.im.Extents() {
			xb += e.Len
		}
		if xb != c.covered {
			t.Fatalf("Extents() cover %d bytes, want %d", xb, c.covered)
		}
		for k := range rapid.IntRange(1, 40).Draw(t, "reads") {
			var off int64
			if rapid.Bool().Draw(t, fmt.Sprintf("nearBound%d", k)) {
				b := rapid.SampledFrom(c.bounds).Draw(t, fmt.Sprintf("bound%d", k))
				off = max(0, b+rapid.Int64Range(-700, 700).Draw(t, fmt.Sprintf("delta%d", k)))
			} else {
				off = rapid.Int64Range(0, c.size+1000).Draw(t, fmt.Sprintf("off%d", k))
			}
			n := rapid.IntRange(0, 3*ss+100).Draw(t, fmt.Sprintf("n%d", k))
			if rapid.IntRange(0, 9).Draw(t, fmt.Sprintf("big%d", k)) == 0 {
				n = rapid.IntRange(0, int(c.size)+2000).Draw(t, fmt.Sprintf("bign%d", k))
			}
			c.checkRead(t, off, n)
		}
		// The whole device in one read, and reads at and after the end.
		c.checkRead(t, 0, int(c.size))
		c.checkRead(t, 0, int(c.size)+1)
		c.checkRead(t, c.size, 1)
		c.checkRead(t, c.size, 0)
		c.checkRead(t, c.size+ss, 10)
		if _, err := c.im.ReadAt(make([]byte, 1), -1); err == nil {
			t.Fatalf("ReadAt at offset -1: no error")
		}
	})
}

// TestImageWriteToAndOverlay: WriteTo produces the naive image, and WriteOverlay onto a copy of
// the base (zeros when none, zero-padded when shorter) produces it too.
func TestImageWriteToAndOverlay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawImageCase(t)
		var buf bytes.Buffer
		n, err := c.im.WriteTo(&buf)
		if err != nil || n != c.size {
			t.Fatalf("WriteTo = (%d, %v), want (%d, nil)", n, err, c.size)
		}
		if !bytes.Equal(buf.Bytes(), c.want) {
			t.Fatalf("WriteTo differs from the naive image at byte %d", firstDiff(buf.Bytes(), c.want))
		}
		f := make(memWriterAt, c.size)
		copy(f, c.baseBuf)
		if err := c.im.WriteOverlay(f); err != nil {
			t.Fatalf("WriteOverlay: %v", err)
		}
		if !bytes.Equal(f, c.want) {
			t.Fatalf("WriteOverlay differs from the naive image at byte %d", firstDiff(f, c.want))
		}
		if c.data.err != nil {
			t.Fatal(c.data.err)
		}
	})
}

func firstDiff(a, b []byte) int {
	for k := range min(len(a), len(b)) {
		if a[k] != b[k] {
			return k
		}
	}
	return min(len(a), len(b))
}

// TestImageNoOverlay: a nil overlay reads the base (zero-padded past its end) or zeros.
func TestImageNoOverlay(t *testing.T) {
	base := []byte("0123456789")
	for _, tc := range []struct {
		name string
		base io.ReaderAt
		want []byte
	}{
		{"nil base", nil, make([]byte, 16)},
		{"short base", bytes.NewReader(base), append(append([]byte(nil), base...), 0, 0, 0, 0, 0, 0)},
		{"long base", bytes.NewReader(append(append([]byte(nil), base...), base...)), append(append([]byte(nil), base...), base[:6]...)},
	} {
		im := image.New(16, tc.base, nil, nil)
		if im.OverlayBytes() != 0 || len(im.Extents()) != 0 {
			t.Fatalf("%s: empty overlay covers %d bytes, extents %v", tc.name, im.OverlayBytes(), im.Extents())
		}
		for off := 0; off <= 16; off++ {
			for n := 0; n <= 18-off; n++ {
				p := bytes.Repeat([]byte{0xee}, n)
				got, err := im.ReadAt(p, int64(off))
				want := min(n, 16-off)
				wantErr := error(nil)
				if want < n || off == 16 {
					wantErr = io.EOF
				}
				if got != want || err != wantErr || !bytes.Equal(p[:got], tc.want[off:off+got]) {
					t.Fatalf("%s: ReadAt(len %d, off %d) = (%d, %v, %q), want (%d, %v, %q)", tc.name, n, off, got, err, p[:got], want, wantErr, tc.want[off:off+want])
				}
			}
		}
		var buf bytes.Buffer
		if n, err := im.WriteTo(&buf); err != nil || n != 16 || !bytes.Equal(buf.Bytes(), tc.want) {
			t.Fatalf("%s: WriteTo = (%d, %v, %q), want %q", tc.name, n, err, buf.Bytes(), tc.want)
		}
	}
}

type errReaderAt struct{ err error }

func (e errReaderAt) ReadAt(p []byte, off int64) (int, error) { return 0, e.err }

// TestImageBaseError: a base read failure (other than EOF) is reported, not read as zeros.
func TestImageBaseError(t *testing.T) {
	boom := errors.New("boom")
	im := image.New(4096, errReaderAt{boom}, nil, nil)
	if _, err := im.ReadAt(make([]byte, 10), 0); !errors.Is(err, boom) {
		t.Fatalf("ReadAt over a failing base: err %v, want %v", err, boom)
	}
	if _, err := im.WriteTo(io.Discard); !errors.Is(err, boom) {
		t.Fatalf("WriteTo over a failing base: err %v, want %v", err, boom)
	}
}
