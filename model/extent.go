package model

import "sort"

// Source kinds of an extent.
const (
	SrcBase = -1 // the base image (or zeros when there is none)
	SrcZero = -2 // zeros (WRITE_ZEROES, DISCARD read back as zeros)
)

// Extent is a byte range of a crash image and where its content comes from: the base, zeros, or
// the data of op Op starting at byte OpOff of that op.
type Extent struct {
	Off, Len int64
	Op       int
	OpOff    int64
	// ZeroOp is the op whose zeros an SrcZero extent shows (WRITE_ZEROES or DISCARD), so that
	// content keys can tell where the zeros came from; -1 otherwise.
	ZeroOp int
}

// Extents is a sorted, non-overlapping list of extents over one device: the overlay. Gaps read
// from the base.
type Extents []Extent

// Lookup returns the extent covering off and true, or false when off is in a gap (base).
func (x Extents) Lookup(off int64) (Extent, bool) {
	i := sort.Search(len(x), func(i int) bool { return x[i].Off+x[i].Len > off })
	if i < len(x) && x[i].Off <= off {
		return x[i], true
	}
	return Extent{}, false
}

// paint overlays [off, off+n) with source (op, opOff) and returns the new list. Cost is
// O(log len + extents touched) plus the splice.
func (x Extents) paint(off, n int64, op int, opOff int64, zop int) Extents {
	end := off + n
	i := sort.Search(len(x), func(i int) bool { return x[i].Off+x[i].Len > off })
	j := i
	var pre, post []Extent
	for j < len(x) && x[j].Off < end {
		e := x[j]
		if e.Off < off {
			pre = append(pre, Extent{Off: e.Off, Len: off - e.Off, Op: e.Op, OpOff: e.OpOff, ZeroOp: e.ZeroOp})
		}
		if e.Off+e.Len > end {
			d := end - e.Off
			post = append(post, Extent{Off: end, Len: e.Off + e.Len - end, Op: e.Op, OpOff: e.OpOff + srcAdvance(e.Op, d), ZeroOp: e.ZeroOp})
		}
		j++
	}
	mid := make([]Extent, 0, len(pre)+1+len(post))
	mid = append(mid, pre...)
	mid = append(mid, Extent{Off: off, Len: n, Op: op, OpOff: opOff, ZeroOp: zop})
	mid = append(mid, post...)
	out := make(Extents, 0, len(x)-(j-i)+len(mid))
	out = append(out, x[:i]...)
	out = append(out, mid...)
	out = append(out, x[j:]...)
	return out
}

// srcAdvance: offsets within zero/base sources carry no meaning.
func srcAdvance(op int, d int64) int64 {
	if op < 0 {
		return 0
	}
	return d
}

// Clone copies the list.
func (x Extents) Clone() Extents { return append(Extents(nil), x...) }
