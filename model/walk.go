package model

import (
	"sort"

	"github.com/powercut/powercut/pclog"
)

// Walker computes the epochs of successive crash points of one model incrementally: operations
// enter as they are submitted, settle (join the shared layer) once no choice can affect them, and
// never leave it. The cost of a crash point is the operations that changed status since the
// previous one, not the length of the log.
//
// Why settled operations stay settled: an operation D settles once it landed for sure and every
// per-state operation overlapping it must come after it. Operations entering later were submitted
// after D completed, so they come after D too; concurrent overlapping pairs (whose order is a
// choice) and discards under policy either never settle.
type Walker struct {
	h   *History
	m   Model
	pol DiscardPolicy

	bySubmit []int // data ops by submit
	nextSub  int
	nextData int // prefix-like models: next op in completion order
	nextComp int // ops with completion below the last T, in completion order
	cover    map[uint16]uint64
	fuaDone  map[uint16]uint64 // per device: the latest completion of a completed FUA op (R8)

	inR      []bool
	settled  []bool
	pairSeed []bool
	uns      []int // unsettled ops in R
	discards []int // discards (policy either) in R
	pairs    [][2]int
	pairMax  []uint64 // submit of the later-submitted member, per pair
	nextPair int

	layers map[uint16]*layer
	lastT  uint64
}

// Walk starts a walk of model m with discard policy pol. Epochs must be requested in increasing
// crash-point order.
func (h *History) Walk(m Model, pol DiscardPolicy) *Walker {
	w := &Walker{h: h, m: m, pol: pol, cover: map[uint16]uint64{}, fuaDone: map[uint16]uint64{}, inR: make([]bool, len(h.Ops)),
		settled: make([]bool, len(h.Ops)), pairSeed: make([]bool, len(h.Ops)), layers: map[uint16]*layer{}}
	for dev, size := range h.DevSize {
		w.layers[dev] = newLayer(size)
	}
	for i := range h.Ops {
		if w.relevant(i) {
			w.bySubmit = append(w.bySubmit, i)
		}
	}
	sort.SliceStable(w.bySubmit, func(a, b int) bool { return h.Ops[w.bySubmit[a]].Submit < h.Ops[w.bySubmit[b]].Submit })
	if m == Reorder || m == Torn {
		w.pairs = concurrentOverlaps(h, w.bySubmit)
		sort.SliceStable(w.pairs, func(a, b int) bool { return w.pairMaxOf(w.pairs[a]) < w.pairMaxOf(w.pairs[b]) })
		for _, p := range w.pairs {
			w.pairMax = append(w.pairMax, w.pairMaxOf(p))
			w.pairSeed[p[0]], w.pairSeed[p[1]] = true, true
		}
	}
	return w
}

// relevant: a data op that can change content (discards ignored under policy keep are not).
func (w *Walker) relevant(i int) bool {
	o := &w.h.Ops[i]
	return o.isData() && !(o.Kind == pclog.KindDiscard && w.pol == DiscardKeep)
}

func (w *Walker) pairMaxOf(p [2]int) uint64 {
	return max(w.h.Ops[p[0]].Submit, w.h.Ops[p[1]].Submit)
}

// fixed reports whether op i (in R) landed whole in every state at t.
func (w *Walker) fixed(i int, t uint64) bool {
	return w.m.landedWhole(&w.h.Ops[i], t, w.cover, w.fuaDone)
}

// mustPrecede: d is applied before u in every state.
func (w *Walker) mustPrecede(d, u int) bool {
	return w.m.mustPrecede(&w.h.Ops[d], &w.h.Ops[u])
}

// Epoch advances to crash point p and returns its epoch.
func (w *Walker) Epoch(p Point) *Epoch {
	h, t := w.h, p.T
	if t < w.lastT {
		panic("model: Walker.Epoch called with a crash point before the previous one")
	}
	w.lastT = t
	for ; w.nextComp < len(h.Ops) && h.Ops[w.nextComp].Complete < t; w.nextComp++ {
		o := &h.Ops[w.nextComp]
		if o.isFlush() && o.Submit > w.cover[o.Dev] {
			w.cover[o.Dev] = o.Submit
		}
		if o.fua() && o.Complete > w.fuaDone[o.Dev] {
			w.fuaDone[o.Dev] = o.Complete
		}
	}
	if w.m.prefixLike() {
		// Everything completed before t landed, nothing else: ops enter as they complete.
		for ; w.nextData < len(h.Ops) && h.Ops[w.nextData].Complete < t; w.nextData++ {
			if w.relevant(w.nextData) {
				w.enter(w.nextData)
			}
		}
	} else {
		for ; w.nextSub < len(w.bySubmit) && h.Ops[w.bySubmit[w.nextSub]].Submit < t; w.nextSub++ {
			w.enter(w.bySubmit[w.nextSub])
		}
	}
	// Settle in completion order: an op that must precede another is considered first.
	sort.Slice(w.uns, func(a, b int) bool { return w.uns[a] < w.uns[b] })
	carriers := w.carries(t)
	keep := w.uns[:0]
	var stay, newly []int
	for k, i := range w.uns {
		if w.canSettle(i, t, carriers, w.uns[k+1:], stay) {
			w.settled[i] = true
			newly = append(newly, i)
			o := &h.Ops[i]
			paintLayer(w.layers[o.Dev], h, i)
			continue
		}
		stay = append(stay, i)
	}
	keep = append(keep, stay...)
	w.uns = keep

	e := &Epoch{H: h, M: w.m, Policy: w.pol, Point: p, pending: map[int]bool{}, discards: map[int]bool{}, pairIdx: map[[2]int]bool{},
		cover: map[uint16]uint64{}, fuaDone: map[uint16]uint64{}, Carries: carriers, Settled: newly}
	for dev, c := range w.cover {
		e.cover[dev] = c
	}
	for dev, c := range w.fuaDone {
		e.fuaDone[dev] = c
	}
	e.unsettled = append([]int(nil), w.uns...)
	for _, i := range w.uns {
		if !w.fixed(i, t) {
			e.Pending = append(e.Pending, i)
			e.pending[i] = true
		}
	}
	// Discard choices (policy either): a landed discard whose outcome can still change the image;
	// under coalesce also a possibly-persisted one (the device persists in order, so "landed but
	// ignored" differs from "not landed"). Under reorder and torn a possibly-persisted discard
	// that was ignored shows the same image as one that did not land: dropping it is that choice.
	live := w.discards[:0]
	for _, i := range w.discards {
		if w.settled[i] {
			continue
		}
		live = append(live, i)
		if w.fixed(i, t) {
			if !w.discardOpen(i, t, w.uns) {
				continue
			}
		} else if w.m != Coalesce {
			continue
		}
		e.Discards = append(e.Discards, i)
		e.discards[i] = true
	}
	w.discards = live
	for ; w.nextPair < len(w.pairs) && w.pairMax[w.nextPair] < t; w.nextPair++ {
	}
	e.Pairs = append([][2]int(nil), w.pairs[:w.nextPair]...)
	sort.Slice(e.Pairs, func(a, b int) bool {
		if e.Pairs[a][0] != e.Pairs[b][0] {
			return e.Pairs[a][0] < e.Pairs[b][0]
		}
		return e.Pairs[a][1] < e.Pairs[b][1]
	})
	for _, pr := range e.Pairs {
		e.pairIdx[pr] = true
	}
	e.layer = map[uint16]*LayerSnap{}
	for dev, l := range w.layers {
		e.layer[dev] = l.snapshot()
	}
	return e
}

func (w *Walker) enter(i int) {
	w.inR[i] = true
	w.uns = append(w.uns, i)
	if w.h.Ops[i].Kind == pclog.KindDiscard && w.pol == DiscardEither {
		w.discards = append(w.discards, i)
	}
}

// carries returns, for coalesce, the later same-range writes issued before t whose content each
// pending write may carry.
func (w *Walker) carries(t uint64) map[int][]int {
	if w.m != Coalesce {
		return nil
	}
	h := w.h
	out := map[int][]int{}
	for _, i := range w.uns {
		oi := &h.Ops[i]
		if oi.Kind != pclog.KindWrite || w.fixed(i, t) {
			continue
		}
		for _, j := range w.uns {
			oj := &h.Ops[j]
			if j > i && oj.Kind == pclog.KindWrite && oj.Submit < t && oj.Dev == oi.Dev && oj.Off == oi.Off && oj.Len == oi.Len {
				out[i] = append(out[i], j)
			}
		}
		sort.Ints(out[i])
	}
	return out
}

// canSettle: op i landed for sure, no choice involves it, and every other unsettled op
// overlapping it comes after it in every state. later and stay are the other unsettled ops.
func (w *Walker) canSettle(i int, t uint64, carriers map[int][]int, later, stay []int) bool {
	h := w.h
	o := &h.Ops[i]
	if !w.fixed(i, t) || w.pairSeed[i] {
		return false
	}
	if _, c := carriers[i]; c {
		return false
	}
	for _, group := range [][]int{stay, later} {
		for _, u := range group {
			if o.overlaps(&h.Ops[u]) && !w.mustPrecede(i, u) {
				return false
			}
		}
	}
	// A landed discard under policy either settles (as zeros) once its choice can no longer
	// change the image: R4 hides it or what it would keep is zeros anyway.
	if o.Kind == pclog.KindDiscard && w.pol == DiscardEither && w.discardOpen(i, t, stay, later) {
		return false
	}
	return true
}

// discardOpen reports whether the zero-or-keep choice of discard i (policy either, landed whole
// at t) can change the image. A sector of its range is closed when a landed WRITE or
// WRITE_ZEROES that must come after the discard covers it (R4: the discard is invisible there),
// or when everything that could lie under the discard there reads as zeros (no unsettled WRITE
// that may precede it, and the settled layer holds zeros or a base the history knows is zero).
// A choice whose two outcomes give the same bytes everywhere is not a choice. uns are the other
// unsettled ops.
func (w *Walker) discardOpen(i int, t uint64, uns ...[]int) bool {
	h := w.h
	d := &h.Ops[i]
	vis := [][2]int64{{d.Off, d.Off + d.Len}}
	for _, g := range uns {
		for _, u := range g {
			o := &h.Ops[u]
			if u == i || !d.overlaps(o) || o.Kind == pclog.KindDiscard || !w.fixed(u, t) || !w.mustPrecede(i, u) {
				continue
			}
			vis = cutSpan(vis, o.Off, o.Off+o.Len)
		}
	}
	if len(vis) == 0 {
		return false
	}
	for _, g := range uns {
		for _, u := range g {
			o := &h.Ops[u]
			if u == i || o.Kind != pclog.KindWrite || !d.overlaps(o) || w.mustPrecede(i, u) {
				continue
			}
			for _, v := range vis {
				if o.Off < v[1] && v[0] < o.Off+o.Len {
					return true
				}
			}
		}
	}
	l := w.layers[d.Dev]
	for _, v := range vis {
		for off := v[0]; off < v[1]; {
			e, ok, next := l.segment(off)
			if ok {
				if e.Op != SrcZero {
					return true
				}
				off = e.Off + e.Len
				continue
			}
			end := min(next, v[1])
			if h.BaseZero == nil || !h.BaseZero(d.Dev, off, end-off) {
				return true
			}
			off = end
		}
	}
	return false
}

// cutSpan removes [a, b) from a sorted list of disjoint spans.
func cutSpan(spans [][2]int64, a, b int64) [][2]int64 {
	var out [][2]int64
	for _, s := range spans {
		if b <= s[0] || s[1] <= a {
			out = append(out, s)
			continue
		}
		if s[0] < a {
			out = append(out, [2]int64{s[0], a})
		}
		if b < s[1] {
			out = append(out, [2]int64{b, s[1]})
		}
	}
	return out
}

func paintLayer(l *layer, h *History, i int) {
	o := &h.Ops[i]
	if o.Kind == pclog.KindWrite {
		l.paint(o.Off, o.Len, i, 0, -1)
	} else {
		l.paint(o.Off, o.Len, SrcZero, 0, i)
	}
}
