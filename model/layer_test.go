package model

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// layerSector is the naive model of one sector's source: what a byte-array model would show,
// kept per sector (every paint in these tests is sector-aligned).
type layerSector struct {
	set   bool // covered by the overlay (false: reads from the base)
	op    int  // SrcZero or a write op
	opOff int64
	zop   int
}

const layerSS = 512

// naivePaint paints sectors [off, off+n) (bytes, sector-aligned) of m.
func naivePaint(m []layerSector, off, n int64, op int, opOff int64, zop int) {
	for s := off / layerSS; s < (off+n)/layerSS; s++ {
		v := layerSector{set: true, op: op, zop: zop}
		if op >= 0 {
			v.opOff = opOff + s*layerSS - off
		}
		m[s] = v
	}
}

// paintArgs draws a sector-aligned paint of a device of size bytes: a write (op >= 0 with an
// offset into its data) or zeros (SrcZero, recording the zeroing op).
type paintArgs struct {
	off, n int64
	op     int
	opOff  int64
	zop    int
}

func drawPaint(t *rapid.T, size int64, chunk int64, label string) paintArgs {
	sectors := size / layerSS
	var start int64
	if rapid.Bool().Draw(t, label+"_nearChunk") {
		// Start close to a chunk boundary so paints straddle chunks often.
		b := rapid.Int64Range(0, (size-1)/chunk).Draw(t, label+"_boundary") * chunk
		start = b/layerSS + rapid.Int64Range(-3, 3).Draw(t, label+"_delta")
		start = max(0, min(start, sectors-1))
	} else {
		start = rapid.Int64Range(0, sectors-1).Draw(t, label+"_start")
	}
	maxLen := min(sectors-start, 3*chunk/layerSS)
	n := rapid.Int64Range(1, maxLen).Draw(t, label+"_len")
	p := paintArgs{off: start * layerSS, n: n * layerSS}
	if rapid.IntRange(0, 3).Draw(t, label+"_zero") == 0 {
		p.op, p.zop = SrcZero, rapid.IntRange(0, 50).Draw(t, label+"_zop")
	} else {
		p.op, p.zop = rapid.IntRange(0, 50).Draw(t, label+"_op"), -1
		p.opOff = rapid.Int64Range(0, 64).Draw(t, label+"_opOff") * layerSS
	}
	return p
}

// checkOverlay verifies an overlay against the naive per-sector model want (len: size/ss).
func checkOverlay(t interface {
	Helper()
	Fatalf(string, ...any)
}, o *Overlay, want []layerSector) {
	t.Helper()
	size := int64(len(want)) * layerSS
	if o.Size() != size {
		t.Fatalf("Size() = %d, want %d", o.Size(), size)
	}
	// Segment tiles [0, size): each run starts where the previous ended, is non-empty, stays in
	// the device and agrees with the model sector by sector.
	var covered int64
	for off := int64(0); off < size; {
		e, ok, end := o.Segment(off)
		if end <= off || end > size {
			t.Fatalf("Segment(%d) = (%+v, %v, end %d): end not in (off, size=%d]", off, e, ok, end, size)
		}
		if off%layerSS != 0 || end%layerSS != 0 {
			t.Fatalf("Segment(%d) end %d not sector-aligned", off, end)
		}
		if ok {
			if e.Off != off || e.Off+e.Len < end {
				t.Fatalf("Segment(%d) extent %+v does not start at off or does not reach end %d", off, e, end)
			}
			covered += end - off
		}
		for s := off / layerSS; s < end/layerSS; s++ {
			w := want[s]
			if w.set != ok {
				t.Fatalf("Segment(%d) = (%+v, ok=%v, end %d) but sector %d covered=%v (%+v)", off, e, ok, end, s, w.set, w)
			}
			if !ok {
				continue
			}
			d := s*layerSS - off
			got := layerSector{set: true, op: e.Op, zop: e.ZeroOp}
			if e.Op >= 0 {
				got.opOff = e.OpOff + d
			}
			if got != w {
				t.Fatalf("Segment(%d) = (%+v, end %d): sector %d shows %+v, want %+v", off, e, end, s, got, w)
			}
		}
		if !ok && end < size && !want[end/layerSS].set {
			t.Fatalf("Segment(%d) gap stops at %d, but sector %d is still a gap", off, end, end/layerSS)
		}
		off = end
	}
	if b := o.Bytes(); b != covered {
		t.Fatalf("Bytes() = %d, Segment covers %d", b, covered)
	}
	var wantBytes int64
	for _, w := range want {
		if w.set {
			wantBytes += layerSS
		}
	}
	if covered != wantBytes {
		t.Fatalf("overlay covers %d bytes, model %d", covered, wantBytes)
	}
	// Extents agrees with the model (and so with Segment): sorted, disjoint, non-empty.
	x := o.Extents()
	got := make([]layerSector, len(want))
	var xb int64
	for k, e := range x {
		if e.Len <= 0 || e.Off < 0 || e.Off+e.Len > size {
			t.Fatalf("Extents()[%d] = %+v out of range (size %d)", k, e, size)
		}
		if k > 0 && x[k-1].Off+x[k-1].Len > e.Off {
			t.Fatalf("Extents() not sorted/disjoint at %d: %+v then %+v", k, x[k-1], e)
		}
		xb += e.Len
		naivePaint(got, e.Off, e.Len, e.Op, e.OpOff, e.ZeroOp)
		if e.Op < 0 {
			for s := e.Off / layerSS; s < (e.Off+e.Len)/layerSS; s++ {
				got[s].opOff = 0
			}
		}
	}
	if xb != wantBytes {
		t.Fatalf("Extents() cover %d bytes, want %d", xb, wantBytes)
	}
	for s := range want {
		if got[s] != want[s] {
			t.Fatalf("Extents() sector %d shows %+v, want %+v", s, got[s], want[s])
		}
		if e, ok := x.Lookup(int64(s) * layerSS); ok != want[s].set || (ok && (e.Op != want[s].op || e.ZeroOp != want[s].zop)) {
			t.Fatalf("Extents().Lookup(sector %d) = (%+v, %v), want %+v", s, e, ok, want[s])
		}
	}
}

type layerSnapshot struct {
	snap  *LayerSnap
	naive []layerSector
	at    int // paint count when taken
}

// TestLayerCopyOnWrite: random sector-aligned paints crossing chunk boundaries interleaved with
// snapshots; every snapshot keeps showing what the naive model showed when it was taken, however
// many paints follow, and overlays (snapshot + delta) tile the device and let the delta win.
func TestLayerCopyOnWrite(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// A few MiB, not necessarily a multiple of the 256 KiB chunk.
		size := rapid.Int64Range(1, 6<<20/layerSS).Draw(t, "sectors") * layerSS
		l := newLayer(size)
		if l.chunk != 256<<10 {
			t.Fatalf("chunk %d for a %d-byte device", l.chunk, size)
		}
		naive := make([]layerSector, size/layerSS)
		var snaps []layerSnapshot
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for k := 0; k < steps; k++ {
			if rapid.IntRange(0, 3).Draw(t, fmt.Sprintf("act%d", k)) == 0 {
				snaps = append(snaps, layerSnapshot{snap: l.snapshot(), naive: append([]layerSector(nil), naive...), at: k})
				continue
			}
			p := drawPaint(t, size, l.chunk, fmt.Sprintf("p%d", k))
			l.paint(p.off, p.n, p.op, p.opOff, p.zop)
			naivePaint(naive, p.off, p.n, p.op, p.opOff, p.zop)
		}
		snaps = append(snaps, layerSnapshot{snap: l.snapshot(), naive: append([]layerSector(nil), naive...), at: steps})
		// Paint more after the last snapshot: it must not see this either.
		for k := 0; k < rapid.IntRange(0, 5).Draw(t, "after"); k++ {
			p := drawPaint(t, size, l.chunk, fmt.Sprintf("after%d", k))
			l.paint(p.off, p.n, p.op, p.opOff, p.zop)
		}

		for si, s := range snaps {
			// The snapshot alone.
			checkOverlay(t, &Overlay{layer: s.snap, size: size}, s.naive)

			// A delta painted on top wins over the snapshot.
			var delta Extents
			want := append([]layerSector(nil), s.naive...)
			nd := rapid.IntRange(0, 8).Draw(t, fmt.Sprintf("deltas%d", si))
			for k := 0; k < nd; k++ {
				p := drawPaint(t, size, l.chunk, fmt.Sprintf("d%d_%d", si, k))
				delta = delta.paint(p.off, p.n, p.op, p.opOff, p.zop)
				naivePaint(want, p.off, p.n, p.op, p.opOff, p.zop)
			}
			checkOverlay(t, &Overlay{layer: s.snap, delta: delta, size: size}, want)

			// The same delta without any layer (EmptyOverlay-like).
			only := make([]layerSector, len(want))
			for _, e := range delta {
				naivePaint(only, e.Off, e.Len, e.Op, e.OpOff, e.ZeroOp)
			}
			checkOverlay(t, &Overlay{delta: delta, size: size}, only)
		}
	})
}

// TestLayerEmpty: a fresh layer and EmptyOverlay cover nothing and are one gap.
func TestLayerEmpty(t *testing.T) {
	for _, size := range []int64{layerSS, 256 << 10, 256<<10 + layerSS, 3 << 20} {
		want := make([]layerSector, size/layerSS)
		checkOverlay(t, EmptyOverlay(size), want)
		s := newLayer(size).snapshot()
		o := &Overlay{layer: s, size: size}
		checkOverlay(t, o, want)
		if _, ok, end := o.Segment(0); ok || end != size {
			t.Fatalf("size %d: Segment(0) = ok %v end %d, want one gap to %d", size, ok, end, size)
		}
	}
}

// TestLayerLargeDevice: past maxChunks chunks, the chunk grows; a paint crossing chunk boundaries
// still reads back whole and snapshots stay isolated.
func TestLayerLargeDevice(t *testing.T) {
	size := int64(5) << 30
	l := newLayer(size)
	if int64(len(l.chunks)) > maxChunks || l.chunk*int64(len(l.chunks)) < size {
		t.Fatalf("chunk %d x %d does not cover %d within %d chunks", l.chunk, len(l.chunks), size, maxChunks)
	}
	off := 3*l.chunk - 4*layerSS
	n := 2*l.chunk + 8*layerSS
	l.paint(off, n, 7, 1024, -1)
	s1 := l.snapshot()
	l.paint(off+l.chunk, layerSS, SrcZero, 0, 9)
	s2 := l.snapshot()

	check := func(s *LayerSnap, zeroed bool) {
		t.Helper()
		o := &Overlay{layer: s, size: size}
		if got := o.Bytes(); got != n {
			t.Fatalf("Bytes() = %d, want %d", got, n)
		}
		want := Extents{{Off: off, Len: n, Op: 7, OpOff: 1024, ZeroOp: -1}}
		if zeroed {
			z := off + l.chunk
			want = Extents{
				{Off: off, Len: z - off, Op: 7, OpOff: 1024, ZeroOp: -1},
				{Off: z, Len: layerSS, Op: SrcZero, ZeroOp: 9},
				{Off: z + layerSS, Len: off + n - z - layerSS, Op: 7, OpOff: 1024 + z + layerSS - off, ZeroOp: -1},
			}
		}
		got := o.Extents()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Extents() = %+v, want %+v", got, want)
		}
		if _, ok, end := o.Segment(0); ok || end != off {
			t.Fatalf("Segment(0) = ok %v end %d, want gap to %d", ok, end, off)
		}
		if _, ok, end := o.Segment(off + n); ok || end != size {
			t.Fatalf("Segment(%d) = ok %v end %d, want gap to %d", off+n, ok, end, size)
		}
	}
	check(s1, false)
	check(s2, true)
}
