package model

import (
	"fmt"
	"sort"

	"github.com/powercut/powercut/pclog"
)

// Epoch is the analysis of one crash point under one model: which operations landed for sure,
// which may or may not have, and which choices a state can make. It precomputes the overlay of
// the settled operations (those no choice can affect) so a state costs only what it changes.
type Epoch struct {
	H      *History
	M      Model
	Policy DiscardPolicy
	Point  Point

	// Pending ops may or may not land (reorder, torn, coalesce), in completion order.
	Pending []int
	// Discards are discards whose effect is a choice (policy either), in completion order.
	Discards []int
	// Pairs are concurrent overlapping ops whose order is a choice (reorder/torn): [a, b] with
	// a before b in completion order. A state may flip a pair (b applied before a).
	Pairs [][2]int
	// Carries lists, for coalesce, the later same-range writes whose content op i may carry.
	Carries map[int][]int
	// Settled are the ops that joined the shared layer at this crash point (since the previous
	// epoch of the same walk), in the order they were painted.
	Settled []int

	pending   map[int]bool
	discards  map[int]bool
	pairIdx   map[[2]int]bool
	unsettled []int // ops painted per state (fixed-but-affected and pending), completion order
	layer     map[uint16]*LayerSnap
	cover     map[uint16]uint64
	fuaDone   map[uint16]uint64
}

// IsFixed reports whether op i landed whole in every state of this crash point (durable for
// reorder, torn and coalesce; completed for prefix and flush).
func (e *Epoch) IsFixed(i int) bool {
	o := &e.H.Ops[i]
	if !o.isData() || (o.Kind == pclog.KindDiscard && e.Policy == DiscardKeep) {
		return false
	}
	return e.M.landedWhole(o, e.Point.T, e.cover, e.fuaDone)
}

// Epoch analyses crash point p on its own (a walk from the start of the log to p). To visit
// many crash points in order, use Walk.
func (h *History) Epoch(m Model, pol DiscardPolicy, p Point) *Epoch {
	return h.Walk(m, pol).Epoch(p)
}

// paintOp paints op i (content of op src when src >= 0: a coalesce carry), restricted to the
// sectors in mask when mask is non-nil.
func paintOp(x Extents, h *History, i, src int, mask Mask) Extents {
	o := &h.Ops[i]
	id := i
	if src >= 0 {
		id = src
	}
	if o.Kind != pclog.KindWrite {
		id = SrcZero
	}
	zop := -1
	if id == SrcZero {
		zop = i
	}
	if mask == nil {
		return x.paint(o.Off, o.Len, id, 0, zop)
	}
	ss := h.SectorSize[o.Dev]
	n := int(o.Len / ss)
	for s := 0; s < n; {
		if !mask.Has(s) {
			s++
			continue
		}
		e := s
		for e < n && mask.Has(e) {
			e++
		}
		opOff := int64(s) * ss
		if id < 0 {
			opOff = 0
		}
		x = x.paint(o.Off+int64(s)*ss, int64(e-s)*ss, id, opOff, zop)
		s = e
	}
	return x
}

// IsPending reports whether op i may or may not land at this point.
func (e *Epoch) IsPending(i int) bool { return e.pending[i] }

// Sectors is the number of logical sectors op i spans.
func (e *Epoch) Sectors(i int) int {
	o := &e.H.Ops[i]
	return int(o.Len / e.H.SectorSize[o.Dev])
}

// Overlay computes the overlay of state st per device: the crash point's shared layer with the
// state's own operations painted on top (cost: those operations).
func (e *Epoch) Overlay(st *State) (map[uint16]*Overlay, error) {
	if err := e.Check(st); err != nil {
		return nil, err
	}
	h := e.H
	dropped := map[int]bool{}
	for _, i := range st.Dropped {
		dropped[i] = true
	}
	keep := map[int]bool{}
	for _, i := range st.KeepDiscards {
		keep[i] = true
	}
	var landed []int
	for _, i := range e.unsettled {
		if dropped[i] || keep[i] {
			continue
		}
		landed = append(landed, i)
	}
	order, err := e.order(landed, st)
	if err != nil {
		return nil, err
	}
	delta := map[uint16]Extents{}
	for _, i := range order {
		dev := h.Ops[i].Dev
		src := -1
		if c, ok := st.Carry[i]; ok {
			src = c
		}
		delta[dev] = paintOp(delta[dev], h, i, src, st.Torn[i])
	}
	out := make(map[uint16]*Overlay, len(h.DevSize))
	for dev, size := range h.DevSize {
		out[dev] = &Overlay{layer: e.layer[dev], delta: delta[dev], size: size}
	}
	return out, nil
}

// Image computes the overlay of state st per device as flat extent lists (cost: the whole
// overlay; Overlay is the cheap form).
func (e *Epoch) Image(st *State) (map[uint16]Extents, error) {
	ov, err := e.Overlay(st)
	if err != nil {
		return nil, err
	}
	out := make(map[uint16]Extents, len(ov))
	for dev, o := range ov {
		out[dev] = o.Extents()
	}
	return out, nil
}

// order returns the landed per-state ops in an order consistent with the real order and the
// state's flips; an impossible combination of flips is an error.
func (e *Epoch) order(landed []int, st *State) ([]int, error) {
	if e.M.completionOrdered() || len(st.Flips) == 0 {
		// Completion order is always a valid linear extension.
		return landed, nil
	}
	flip := map[[2]int]bool{}
	for _, p := range st.Flips {
		flip[p] = true
	}
	return e.topo(landed, flip)
}

// topo sorts ops by precedence edges (a before b when cA < sB) and pair orientations (completion
// order unless flipped), breaking ties by completion order.
func (e *Epoch) topo(ops []int, flip map[[2]int]bool) ([]int, error) {
	h := e.H
	n := len(ops)
	if flip == nil {
		return ops, nil
	}
	pos := map[int]int{}
	for k, i := range ops {
		pos[i] = k
	}
	indeg := make([]int, n)
	adj := make([][]int, n)
	edge := func(a, b int) { adj[a] = append(adj[a], b); indeg[b]++ }
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			if a == b {
				continue
			}
			oa, ob := &h.Ops[ops[a]], &h.Ops[ops[b]]
			if oa.before(ob) {
				edge(a, b)
			} else if a < b && oa.concurrent(ob) && oa.overlaps(ob) {
				if flip[[2]int{ops[a], ops[b]}] {
					edge(b, a)
				} else {
					edge(a, b)
				}
			}
		}
	}
	out := make([]int, 0, n)
	done := make([]bool, n)
	for len(out) < n {
		pick := -1
		for k := 0; k < n; k++ {
			if !done[k] && indeg[k] == 0 {
				pick = k
				break
			}
		}
		if pick < 0 {
			return nil, fmt.Errorf("the flipped orders form a cycle: no real order of the operations allows them")
		}
		done[pick] = true
		out = append(out, ops[pick])
		for _, b := range adj[pick] {
			indeg[b]--
		}
	}
	return out, nil
}

// Check validates st against the epoch: every choice must be one the epoch offers. Its errors
// wrap ErrStateNotAllowed.
func (e *Epoch) Check(st *State) error {
	if err := e.check(st); err != nil {
		return fmt.Errorf("%w: %w", ErrStateNotAllowed, err)
	}
	return nil
}

func (e *Epoch) check(st *State) error {
	if st.Model != e.M || st.Policy != e.Policy || st.Point != e.Point.Index {
		return fmt.Errorf("state %s does not belong to crash point %d of model %s", st, e.Point.Index, e.M)
	}
	for _, i := range st.Dropped {
		if !e.pending[i] {
			return fmt.Errorf("op %d cannot be dropped at crash point %d: it is not possibly-persisted there (durable, not yet submitted, or not a data op)", i, e.Point.Index)
		}
	}
	dropped := map[int]bool{}
	for _, i := range st.Dropped {
		dropped[i] = true
	}
	for i, m := range st.Torn {
		if e.M != Torn {
			return fmt.Errorf("op %d torn, but model %s has atomic operations", i, e.M)
		}
		if !e.pending[i] || dropped[i] {
			return fmt.Errorf("op %d cannot be torn at crash point %d: it is not a possibly-persisted op that landed", i, e.Point.Index)
		}
		n := e.Sectors(i)
		if m.Len() > n || m.Count() == 0 || m.Count() == n {
			return fmt.Errorf("op %d: torn sector set %s must be a proper non-empty subset of its %d sectors", i, m, n)
		}
	}
	for _, i := range st.KeepDiscards {
		if !e.discards[i] {
			return fmt.Errorf("op %d is not a discard whose effect is open at this point (policy %s)", i, e.Policy)
		}
	}
	for _, p := range st.Flips {
		if !e.pairIdx[p] {
			return fmt.Errorf("ops %d and %d are not concurrent overlapping operations at this point: their order is not a choice", p[0], p[1])
		}
	}
	if e.M == Coalesce {
		// The device persists its queue in order: what landed is a prefix of the pending ops.
		for k, i := range e.Pending {
			if dropped[i] {
				for _, j := range e.Pending[k:] {
					if !dropped[j] {
						return fmt.Errorf("coalesce lands a prefix of the pending operations: op %d cannot land after dropped op %d", j, i)
					}
				}
				break
			}
		}
	}
	for i, j := range st.Carry {
		if dropped[i] {
			return fmt.Errorf("op %d carries content but did not land", i)
		}
		ok := false
		for _, c := range e.Carries[i] {
			ok = ok || c == j
		}
		if !ok {
			return fmt.Errorf("op %d cannot carry the content of op %d (coalesce needs a later write to the same range submitted before the crash point)", i, j)
		}
	}
	return nil
}

// CoveredMarks returns the marks before the crash point all of whose preceding data operations
// landed whole in st (block-level coverage).
func (e *Epoch) CoveredMarks(st *State) []string {
	h := e.H
	limit := e.Point.T
	for _, i := range st.Dropped {
		limit = min(limit, h.Ops[i].Complete)
	}
	for i := range st.Torn {
		limit = min(limit, h.Ops[i].Complete)
	}
	var out []string
	for _, i := range h.marks {
		if h.Ops[i].Complete >= limit {
			break
		}
		out = append(out, h.Ops[i].Name)
	}
	return out
}

// Unsettled returns the ops painted per state (everything else is in the shared layer).
func (e *Epoch) Unsettled() []int { return e.unsettled }

// Layer returns the overlay shared by every state of this crash point on device dev.
func (e *Epoch) Layer(dev uint16) *Overlay {
	return &Overlay{layer: e.layer[dev], size: e.H.DevSize[dev]}
}

// concurrentOverlaps returns the pairs of ops in rel that overlap and were concurrent (neither
// completed before the other was submitted), as [a, b] with a before b in completion order. A
// sweep over submit order keeps it proportional to the concurrency actually present.
func concurrentOverlaps(h *History, rel []int) [][2]int {
	bySubmit := append([]int(nil), rel...)
	sort.Slice(bySubmit, func(i, j int) bool { return h.Ops[bySubmit[i]].Submit < h.Ops[bySubmit[j]].Submit })
	var active []int
	var out [][2]int
	for _, i := range bySubmit {
		o := &h.Ops[i]
		keep := active[:0]
		for _, a := range active {
			if h.Ops[a].Complete >= o.Submit { // not completed before o was submitted (Op.before)
				keep = append(keep, a)
			}
		}
		active = keep
		for _, a := range active {
			if h.Ops[a].overlaps(o) {
				if a < i {
					out = append(out, [2]int{a, i})
				} else {
					out = append(out, [2]int{i, a})
				}
			}
		}
		active = append(active, i)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i][0] != out[j][0] {
			return out[i][0] < out[j][0]
		}
		return out[i][1] < out[j][1]
	})
	return out
}

// Version is one content a sector may hold in some state of a crash point.
type Version struct {
	// Src is where the bytes come from: a WRITE op's data (op index), SrcZero or SrcBase.
	Src int
	// Op is the operation that put them there (-1 for the base); for a coalesce carry, the
	// earlier write whose range holds the later write Src's content.
	Op int
	// Durable: Op landed whole in every state of the crash point.
	Durable bool
	// Carried: coalesce, Op carries the content of the later write Src.
	Carried bool
}

// MayShow returns every content a sector may hold at this crash point, given ops: the data
// operations of its device that cover it, in completion order (the caller's index of the
// recording, so the cost is theirs). It is the per-sector statement of the rules: an op may show
// if it landed or may have (R1–R3, R8), unless a landed op that overwrites (not a discard the
// device may ignore) must come after it (R4); a DISCARD shows zeros or, when the device may
// ignore it, lets what was under it through (R7); WRITE_ZEROES shows zeros; the base shows when
// nothing landed overwrites it; under coalesce a landed write may show a later write's content.
// Every content a state of this crash point shows is in the list (soundness, pinned by the
// property tests against the reference).
func (e *Epoch) MayShow(ops []int) []Version {
	h := e.H
	overwrites := func(i int) bool {
		o := &h.Ops[i]
		return e.IsFixed(i) && !(o.Kind == pclog.KindDiscard && e.Policy != DiscardZero)
	}
	var out []Version
	baseOK := true
	for _, i := range ops {
		o := &h.Ops[i]
		if overwrites(i) {
			baseOK = false
		}
		fixed := e.IsFixed(i)
		if !fixed && !e.pending[i] {
			continue
		}
		if o.Kind == pclog.KindDiscard && e.Policy == DiscardKeep {
			continue
		}
		superseded := false
		for _, d := range ops {
			if d != i && overwrites(d) && e.M.mustPrecede(o, &h.Ops[d]) {
				superseded = true
				break
			}
		}
		if superseded {
			continue
		}
		src := i
		if o.Kind != pclog.KindWrite {
			src = SrcZero
		}
		out = append(out, Version{Src: src, Op: i, Durable: fixed})
		for _, j := range e.Carries[i] {
			out = append(out, Version{Src: j, Op: i, Carried: true})
		}
	}
	if baseOK {
		out = append(out, Version{Src: SrcBase, Op: -1})
	}
	return out
}
