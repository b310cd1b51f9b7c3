package model

import "sort"

// layer is the overlay of the settled operations of one device, built incrementally as the
// crash point advances and snapshotted per crash point without copying it: the device is split
// into chunks, each with its own extent list, and a snapshot shares every chunk that the next
// paint does not touch (copy-on-write per chunk). This keeps a long recording's crash points
// cheap: a crash point costs the operations that settled since the previous one.
type layer struct {
	chunk  int64
	chunks []*layerChunk
	gen    uint64
}

type layerChunk struct {
	x   Extents
	gen uint64
}

// maxChunks bounds the chunk-pointer array a snapshot copies.
const maxChunks = 16384

func newLayer(size int64) *layer {
	c := int64(256 << 10)
	for (size+c-1)/c > maxChunks {
		c *= 2
	}
	return &layer{chunk: c, chunks: make([]*layerChunk, (size+c-1)/c), gen: 1}
}

// paint paints [off, off+n) with a source, cloning the chunks it touches once per generation.
func (l *layer) paint(off, n int64, op int, opOff int64, zop int) {
	for n > 0 {
		ci := off / l.chunk
		end := min(off+n, (ci+1)*l.chunk)
		c := l.chunks[ci]
		if c == nil || c.gen != l.gen {
			nc := &layerChunk{gen: l.gen}
			if c != nil {
				nc.x = c.x.Clone()
			}
			l.chunks[ci] = nc
			c = nc
		}
		c.x = c.x.paint(off, end-off, op, opOff, zop)
		if op >= 0 {
			opOff += end - off
		}
		n -= end - off
		off = end
	}
}

// segment looks off up in the live layer (see LayerSnap.segment).
func (l *layer) segment(off int64) (Extent, bool, int64) {
	return (&LayerSnap{chunk: l.chunk, chunks: l.chunks}).segment(off)
}

// snapshot freezes the current content; later paints copy the chunks they touch.
func (l *layer) snapshot() *LayerSnap {
	s := &LayerSnap{chunk: l.chunk, chunks: append([]*layerChunk(nil), l.chunks...)}
	l.gen++
	return s
}

// LayerSnap is an immutable view of a device's settled overlay at one crash point.
type LayerSnap struct {
	chunk  int64
	chunks []*layerChunk
}

// segment returns the extent covering off (ok) or, in a gap, the start of the next extent.
func (s *LayerSnap) segment(off int64) (e Extent, ok bool, next int64) {
	if s == nil {
		return Extent{}, false, 1<<63 - 1
	}
	ci := off / s.chunk
	if ci >= int64(len(s.chunks)) {
		return Extent{}, false, 1<<63 - 1
	}
	if c := s.chunks[ci]; c != nil {
		if e, ok := c.x.Lookup(off); ok {
			return e, true, 0
		}
		if j := sort.Search(len(c.x), func(j int) bool { return c.x[j].Off > off }); j < len(c.x) {
			return Extent{}, false, c.x[j].Off
		}
	}
	for k := ci + 1; k < int64(len(s.chunks)); k++ {
		if c := s.chunks[k]; c != nil && len(c.x) > 0 {
			return Extent{}, false, c.x[0].Off
		}
	}
	return Extent{}, false, 1<<63 - 1
}

// Overlay is one device's crash image overlay: the crash point's shared settled layer with the
// state's own painted operations on top. It is immutable and safe for concurrent use.
type Overlay struct {
	layer *LayerSnap
	delta Extents
	size  int64
}

// Segment describes the run of bytes starting at off that comes from one source: the extent
// (clipped to start at off) when ok, or a gap reading from the base; end is where the run stops.
func (o *Overlay) Segment(off int64) (e Extent, ok bool, end int64) {
	nextDelta := o.size
	if d, hit := o.delta.Lookup(off); hit {
		return clip(d, off), true, d.Off + d.Len
	} else if j := sort.Search(len(o.delta), func(j int) bool { return o.delta[j].Off > off }); j < len(o.delta) {
		nextDelta = o.delta[j].Off
	}
	le, hit, next := o.layer.segment(off)
	if hit {
		return clip(le, off), true, min(le.Off+le.Len, nextDelta)
	}
	return Extent{}, false, min(next, nextDelta, o.size)
}

// Own returns the extents this state painted over its crash point's shared layer, sorted and
// non-overlapping (do not modify). Outside them the state reads what SharedSegment says.
func (o *Overlay) Own() Extents { return o.delta }

// Shared identifies the crash point's settled layer, the part of the overlay every state of the
// point shares (nil: nothing settled). Checkers may cache per-layer work keyed by it.
func (o *Overlay) Shared() *LayerSnap { return o.layer }

// SharedSegment is Segment on the shared layer alone, ignoring the state's own extents.
func (o *Overlay) SharedSegment(off int64) (e Extent, ok bool, end int64) {
	le, hit, next := o.layer.segment(off)
	if hit {
		return clip(le, off), true, le.Off + le.Len
	}
	return Extent{}, false, min(next, o.size)
}

func clip(e Extent, off int64) Extent {
	d := off - e.Off
	e.Off, e.Len = off, e.Len-d
	if e.Op >= 0 {
		e.OpOff += d
	}
	return e
}

// Size is the device size.
func (o *Overlay) Size() int64 { return o.size }

// Extents flattens the overlay into one sorted extent list (cost: the whole overlay).
func (o *Overlay) Extents() Extents {
	var out Extents
	for off := int64(0); off < o.size; {
		e, ok, end := o.Segment(off)
		if ok {
			e.Len = end - off
			if n := len(out); n > 0 && out[n-1].Off+out[n-1].Len == off && out[n-1].Op == e.Op && out[n-1].ZeroOp == e.ZeroOp &&
				(e.Op < 0 || out[n-1].OpOff+out[n-1].Len == e.OpOff) {
				out[n-1].Len += e.Len
			} else {
				out = append(out, e)
			}
		}
		off = end
	}
	return out
}

// Bytes is the number of bytes the overlay covers.
func (o *Overlay) Bytes() int64 {
	var n int64
	for off := int64(0); off < o.size; {
		_, ok, end := o.Segment(off)
		if ok {
			n += end - off
		}
		off = end
	}
	return n
}

// EmptyOverlay is the overlay of a device with nothing on it (every byte from the base).
func EmptyOverlay(size int64) *Overlay { return &Overlay{size: size} }
