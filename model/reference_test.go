package model_test

// An independent brute-force reference for the durability model, written from
// ../shared/design/durability-model.md (not from the implementation), plus the helpers the
// property and rule tests share: a random history generator and the conversion of the
// implementation's overlays to per-sector version vectors.
//
// Physical model the reference encodes (the contract's rules, read operationally):
//
//   - An operation O of a device is submitted before the crash point T (sO < T) or it cannot
//     have reached media at all.
//   - O is durable at T when it completed (cO < T) and either carries FUA (also on a DISCARD,
//     as NBD allows on TRIM), or a flush F of the same device (FLUSH, or a data op with
//     PREFLUSH) completed before T (cF < T) and O completed before F was submitted (cO < sF).
//     Durable ops land whole; every other submitted data op may land or not.
//   - The landed ops reach media in one order, any linear extension of the real order "A before
//     B whenever cA < sB"; each sector shows the last landed op covering it. (In model torn a
//     landed possibly-persisted op may cover only a non-empty subset of its sectors.)
//   - DISCARD reads zeros or the previous content (policy zero / keep / either, chosen per
//     discard); WRITE_ZEROES reads zeros.
//
// The "newest durable d" rule of the contract is not coded directly: it is a consequence of the
// order (a durable D lands, and anything that completed before D was submitted precedes it). The
// per-sector consequence the reference actually yields is the generalised form R4 of doc.go (see
// TestR4_* in rules_test.go), which the tests also check directly.

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"pgregory.net/rapid"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

const (
	refSector    = 512 // default logical sector size
	refDevStride = 8   // max sectors per device in the version vector
	refMaxDevs   = 3   // devices 0..2
	refMaxOps    = 10  // ops per history
	refMaxOpSecs = 3   // sectors per data op (keeps torn enumerable)
)

// Versions of a sector.
const (
	refBase int16 = 0  // the base image
	refZero int16 = -1 // zeros (WRITE_ZEROES, a discard read as zeros)
)

// refVer is sector k of op i's data.
func refVer(i, k int) int16 { return int16(1 + i*16 + k) }

// refImg is a crash image as a per-sector version vector; device d sector s is at
// d*refDevStride+s. Sectors past a device's end stay refBase.
type refImg [refMaxDevs * refDevStride]int16

func (im refImg) String() string {
	var b strings.Builder
	for d := 0; d < refMaxDevs; d++ {
		if d > 0 {
			b.WriteString(" | ")
		}
		for s := 0; s < refDevStride; s++ {
			if s > 0 {
				b.WriteByte(' ')
			}
			switch v := im[d*refDevStride+s]; {
			case v == refBase:
				b.WriteString("b")
			case v == refZero:
				b.WriteString("z")
			default:
				fmt.Fprintf(&b, "%d.%d", (v-1)/16, (v-1)%16)
			}
		}
	}
	return b.String()
}

// refOp is one operation, in sectors, with its two points in the global order.
type refOp struct {
	Kind     pclog.Kind
	FUA      bool
	Preflush bool
	Dev      int
	Off, Len int // sectors
	S, C     int // submit, complete
	Name     string
}

// refHist is a history in completion order.
type refHist struct {
	Ops    []refOp
	DevSec []int // sectors per device, device ids 0..len-1
	SecSz  []int // logical sector size per device (nil: all refSector)
}

func (h *refHist) ss(dev int) int {
	if dev < len(h.SecSz) && h.SecSz[dev] != 0 {
		return h.SecSz[dev]
	}
	return refSector
}

func (h *refHist) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices(sectors)=%v sector sizes=%v\n", h.DevSec, h.SecSz)
	for i, o := range h.Ops {
		fl := ""
		if o.FUA {
			fl += "|FUA"
		}
		if o.Preflush {
			fl += "|PREFLUSH"
		}
		switch o.Kind {
		case pclog.KindMark:
			fmt.Fprintf(&b, "  op%d MARK %q s=c=%d\n", i, o.Name, o.S)
		case pclog.KindFlush:
			fmt.Fprintf(&b, "  op%d FLUSH%s dev%d s=%d c=%d\n", i, fl, o.Dev, o.S, o.C)
		default:
			fmt.Fprintf(&b, "  op%d %s%s dev%d sectors[%d,+%d) s=%d c=%d\n", i, o.Kind, fl, o.Dev, o.Off, o.Len, o.S, o.C)
		}
	}
	return b.String()
}

func (o *refOp) isData() bool {
	return o.Kind == pclog.KindWrite || o.Kind == pclog.KindWriteZeroes || o.Kind == pclog.KindDiscard
}

// flushes: FLUSH, or a data op with PREFLUSH (a flush with the same submit and complete points).
func (o *refOp) flushes() bool {
	return o.Kind == pclog.KindFlush || (o.Preflush && o.isData())
}

// barrier: a completion that the contract lists as a crash point of interest.
func (o *refOp) barrier() bool {
	return o.flushes() || (o.FUA && o.isData())
}

func (o *refOp) covers(dev, sec int) bool { return o.Dev == dev && o.Off <= sec && sec < o.Off+o.Len }

func (h *refHist) end() int {
	e := 0
	for _, o := range h.Ops {
		e = max(e, o.C+1)
	}
	return e
}

// durable: rules "flush" and "FUA" of the contract.
func (h *refHist) durable(i, t int) bool {
	o := &h.Ops[i]
	if !o.isData() || o.C >= t {
		return false
	}
	if o.FUA { // FUA on a DISCARD too: NBD allows it on TRIM
		return true
	}
	for j := range h.Ops {
		f := &h.Ops[j]
		if f.flushes() && f.Dev == o.Dev && f.C < t && o.C < f.S {
			return true
		}
	}
	return false
}

// durableInOrder is durability on an in-order device (models prefix, flush, coalesce): the
// contract's rules plus "a completed FUA write implies everything before it in the device's order
// (completion order) persisted too".
func (h *refHist) durableInOrder(i, t int) bool {
	if h.durable(i, t) {
		return true
	}
	o := &h.Ops[i]
	if !o.isData() || o.C >= t {
		return false
	}
	for j := range h.Ops {
		f := &h.Ops[j]
		if f.FUA && f.isData() && f.Dev == o.Dev && f.C < t && o.C < f.C {
			return true
		}
	}
	return false
}

// refPoints are the crash points of a model, from the contract (doc.go spells them out):
// prefix: start and after every completion; flush: after every FLUSH/FUA/PREFLUSH completion and
// the end; reorder/torn/coalesce: just before every such completion, just after every MARK and
// the end.
func refPoints(h *refHist, m model.Model) []int {
	set := map[int]bool{}
	switch m {
	case model.Prefix:
		set[0] = true
		for _, o := range h.Ops {
			set[o.C+1] = true
		}
	case model.Flush:
		for _, o := range h.Ops {
			if o.barrier() {
				set[o.C+1] = true
			}
		}
		set[h.end()] = true
	case model.Reorder, model.Torn, model.Coalesce:
		for _, o := range h.Ops {
			if o.Kind == pclog.KindMark {
				set[o.C+1] = true
			}
			if o.barrier() {
				set[o.C] = true
			}
		}
		set[h.end()] = true
	}
	var ts []int
	for t := range set {
		ts = append(ts, t)
	}
	sort.Ints(ts)
	return ts
}

// refEffect is how a placed op changes the image: the sectors (bit k = sector k of the op)
// painted with its data or with zeros.
type refEffect struct {
	mask  uint
	zeros bool
}

func refApply(im refImg, h *refHist, i int, ef refEffect, src int) refImg {
	o := &h.Ops[i]
	for k := 0; k < o.Len; k++ {
		if ef.mask&(1<<k) == 0 {
			continue
		}
		x := o.Dev*refDevStride + o.Off + k
		if ef.zeros {
			im[x] = refZero
		} else {
			im[x] = refVer(src, k)
		}
	}
	return im
}

// refEffects lists the ways op i can land (not counting "did not land").
func refEffects(h *refHist, i int, tearable bool, pol model.DiscardPolicy) []refEffect {
	o := &h.Ops[i]
	full := uint(1)<<o.Len - 1
	var masks []uint
	if tearable {
		for m := uint(1); m <= full; m++ {
			masks = append(masks, m)
		}
	} else {
		masks = []uint{full}
	}
	var out []refEffect
	switch o.Kind {
	case pclog.KindWrite:
		for _, m := range masks {
			out = append(out, refEffect{mask: m})
		}
	case pclog.KindWriteZeroes:
		for _, m := range masks {
			out = append(out, refEffect{mask: m, zeros: true})
		}
	case pclog.KindDiscard:
		if pol != model.DiscardKeep {
			for _, m := range masks {
				out = append(out, refEffect{mask: m, zeros: true})
			}
		}
		if pol != model.DiscardZero {
			out = append(out, refEffect{}) // ignored by the device: previous content
		}
	}
	return out
}

// refReorderImages enumerates every image allowed at crash point t under reorder (torn=false)
// or torn: choose which possibly-persisted ops landed, a linear extension of the landed ops
// consistent with "A before B whenever cA < sB", and each landed op's effect. The search places
// ops one at a time (an op may be decided once every op that must precede it is decided) and
// memoises (decided set, image).
func refReorderImages(h *refHist, t int, torn bool, pol model.DiscardPolicy) map[refImg]bool {
	var cand []int
	for i := range h.Ops {
		if h.Ops[i].isData() && h.Ops[i].S < t {
			cand = append(cand, i)
		}
	}
	n := len(cand)
	durable := make([]bool, n)
	effects := make([][]refEffect, n)
	preds := make([]uint, n) // bit j: cand[j] must precede cand[k]
	for k, i := range cand {
		durable[k] = h.durable(i, t)
		effects[k] = refEffects(h, i, torn && !durable[k], pol)
		for j, p := range cand {
			if h.Ops[p].C < h.Ops[i].S {
				preds[k] |= 1 << j
			}
		}
	}
	all := uint(1)<<n - 1
	type key struct {
		done uint
		im   refImg
	}
	seen := map[key]bool{}
	out := map[refImg]bool{}
	var visit func(done uint, im refImg)
	visit = func(done uint, im refImg) {
		if seen[key{done, im}] {
			return
		}
		seen[key{done, im}] = true
		if done == all {
			out[im] = true
			return
		}
		for k := 0; k < n; k++ {
			if done&(1<<k) != 0 || preds[k]&^done != 0 {
				continue
			}
			if !durable[k] {
				visit(done|1<<k, im) // did not land
			}
			for _, ef := range effects[k] {
				visit(done|1<<k, refApply(im, h, cand[k], ef, cand[k]))
			}
		}
	}
	visit(0, refImg{})
	return out
}

// refPrefixImages enumerates the images of the completion-ordered prefix of ops completed before
// t (models prefix and flush), each op whole.
func refPrefixImages(h *refHist, t int, pol model.DiscardPolicy) map[refImg]bool {
	cur := map[refImg]bool{{}: true}
	for i := range h.Ops {
		o := &h.Ops[i]
		if !o.isData() || o.C >= t {
			continue
		}
		next := map[refImg]bool{}
		for im := range cur {
			for _, ef := range refEffects(h, i, false, pol) {
				next[refApply(im, h, i, ef, i)] = true
			}
		}
		cur = next
	}
	return cur
}

// refCoalesceImages is the ZFS-like device of Crucible PR #1798: durable ops (durableInOrder:
// an in-order device has persisted everything before a completed FUA write) land; the
// possibly-persisted ops are persisted in completion order and the crash stops after any k of
// them; each landed WRITE holds either its own content or the newest content issued (submitted
// before t, later in completion order) for exactly its range. Everything is applied in completion
// order.
func refCoalesceImages(h *refHist, t int, pol model.DiscardPolicy) map[refImg]bool {
	var pending []int
	for i := range h.Ops {
		if h.Ops[i].isData() && h.Ops[i].S < t && !h.durableInOrder(i, t) {
			pending = append(pending, i)
		}
	}
	out := map[refImg]bool{}
	for k := 0; k <= len(pending); k++ {
		landed := map[int]bool{}
		for _, i := range pending[:k] {
			landed[i] = true
		}
		cur := map[refImg]bool{{}: true}
		for i := range h.Ops {
			o := &h.Ops[i]
			if !o.isData() || o.S >= t || !(h.durableInOrder(i, t) || landed[i]) {
				continue
			}
			srcs := []int{i}
			if landed[i] && o.Kind == pclog.KindWrite {
				newest := -1
				for j := i + 1; j < len(h.Ops); j++ {
					p := &h.Ops[j]
					if p.Kind == pclog.KindWrite && p.S < t && p.Dev == o.Dev && p.Off == o.Off && p.Len == o.Len {
						newest = j
					}
				}
				if newest >= 0 {
					srcs = append(srcs, newest)
				}
			}
			next := map[refImg]bool{}
			for im := range cur {
				for _, ef := range refEffects(h, i, false, pol) {
					for _, src := range srcs {
						next[refApply(im, h, i, ef, src)] = true
					}
				}
			}
			cur = next
		}
		for im := range cur {
			out[im] = true
		}
	}
	return out
}

// refImages is the reference set of images of model m at crash point t.
func refImages(h *refHist, m model.Model, pol model.DiscardPolicy, t int) map[refImg]bool {
	switch m {
	case model.Reorder:
		return refReorderImages(h, t, false, pol)
	case model.Torn:
		return refReorderImages(h, t, true, pol)
	case model.Prefix, model.Flush:
		return refPrefixImages(h, t, pol)
	case model.Coalesce:
		return refCoalesceImages(h, t, pol)
	}
	panic("unknown model")
}

// ---- bridging to the implementation ----

// refTB is what both *testing.T and *rapid.T offer.
type refTB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// toModel builds the implementation's history (offsets in bytes).
func (h *refHist) toModel(t refTB) *model.History {
	t.Helper()
	mh, err := model.NewHistory(h.toModelOps(), h.devices())
	if err != nil {
		t.Fatalf("NewHistory: %v\n%s", err, h)
	}
	return mh
}

func (h *refHist) toModelOps() []model.Op {
	ops := make([]model.Op, len(h.Ops))
	for i, o := range h.Ops {
		var fl pclog.Flags
		if o.FUA {
			fl |= pclog.FlagFUA
		}
		if o.Preflush {
			fl |= pclog.FlagPreflush
		}
		ops[i] = model.Op{Kind: o.Kind, Flags: fl, Dev: uint16(o.Dev), Submit: uint64(o.S), Complete: uint64(o.C), Name: o.Name}
		if o.isData() {
			ops[i].Off, ops[i].Len = int64(o.Off*h.ss(o.Dev)), int64(o.Len*h.ss(o.Dev))
		}
	}
	return ops
}

func (h *refHist) devices() []pclog.Device {
	var devs []pclog.Device
	for d, n := range h.DevSec {
		devs = append(devs, pclog.Device{ID: uint16(d), Name: fmt.Sprintf("dev%d", d), Size: int64(n * h.ss(d)), SectorSize: h.ss(d)})
	}
	return devs
}

// implImg converts an overlay to the per-sector version vector, checking it is well formed.
func implImg(t refTB, h *refHist, ext map[uint16]model.Extents) refImg {
	t.Helper()
	var im refImg
	for dev, x := range ext {
		if int(dev) >= len(h.DevSec) {
			t.Fatalf("overlay for unknown device %d", dev)
		}
		ss := int64(h.ss(int(dev)))
		size := int64(h.DevSec[dev]) * ss
		for k, e := range x {
			if e.Len <= 0 || e.Off < 0 || e.Off+e.Len > size {
				t.Fatalf("dev %d extent %d %+v out of the device (%d bytes): %+v", dev, k, e, size, x)
			}
			if k > 0 && x[k-1].Off+x[k-1].Len > e.Off {
				t.Fatalf("dev %d extents overlap or unsorted: %+v", dev, x)
			}
		}
		for s := 0; s < h.DevSec[dev]; s++ {
			e, ok := x.Lookup(int64(s) * ss)
			v := refBase
			switch {
			case !ok || e.Op == model.SrcBase:
			case e.Op == model.SrcZero:
				v = refZero
				if z := e.ZeroOp; z < 0 || z >= len(h.Ops) || !h.Ops[z].covers(int(dev), s) ||
					(h.Ops[z].Kind != pclog.KindWriteZeroes && h.Ops[z].Kind != pclog.KindDiscard) {
					t.Fatalf("dev %d sector %d: zero extent %+v names ZeroOp %d, not a WRITE_ZEROES/DISCARD over it", dev, s, e, e.ZeroOp)
				}
			default:
				if e.Op < 0 || e.Op >= len(h.Ops) || h.Ops[e.Op].Kind != pclog.KindWrite {
					t.Fatalf("dev %d sector %d: extent %+v names op %d, not a WRITE", dev, s, e, e.Op)
				}
				src := &h.Ops[e.Op]
				b := e.OpOff + int64(s)*ss - e.Off
				if b < 0 || b%ss != 0 || b >= int64(src.Len)*ss {
					t.Fatalf("dev %d sector %d: extent %+v reads op %d at byte %d, outside its data", dev, s, e, e.Op, b)
				}
				v = refVer(e.Op, int(b/ss))
			}
			im[int(dev)*refDevStride+s] = v
		}
	}
	return im
}

// ---- generator ----

// refGenHistory draws a small history: 1–3 devices of 1–6 sectors, up to maxOps operations
// (WRITE, WRITE_ZEROES, DISCARD, FLUSH, MARK; FUA and PREFLUSH flags) with overlapping ranges
// and a random interleaving of submissions and completions in one global order.
func refGenHistory(t *rapid.T, maxOps int) *refHist {
	h := &refHist{}
	ndev := rapid.IntRange(1, refMaxDevs).Draw(t, "devices")
	for d := 0; d < ndev; d++ {
		h.DevSec = append(h.DevSec, rapid.IntRange(1, 6).Draw(t, fmt.Sprintf("dev%d_sectors", d)))
		h.SecSz = append(h.SecSz, rapid.SampledFrom([]int{512, 512, 4096}).Draw(t, fmt.Sprintf("dev%d_sector_size", d)))
	}
	n := rapid.IntRange(0, maxOps).Draw(t, "ops")
	ops := make([]refOp, n)
	marks := 0
	for i := range ops {
		o := &ops[i]
		switch k := rapid.IntRange(0, 9).Draw(t, "kind"); {
		case k < 4:
			o.Kind = pclog.KindWrite
		case k < 5:
			o.Kind = pclog.KindWriteZeroes
		case k < 6:
			o.Kind = pclog.KindDiscard
		case k < 8:
			o.Kind = pclog.KindFlush
		default:
			o.Kind = pclog.KindMark
		}
		if o.Kind == pclog.KindMark {
			o.Name = fmt.Sprintf("m%d", marks)
			marks++
			continue
		}
		o.Dev = rapid.IntRange(0, ndev-1).Draw(t, "dev")
		if o.isData() {
			ds := h.DevSec[o.Dev]
			o.Off = rapid.IntRange(0, ds-1).Draw(t, "off")
			o.Len = rapid.IntRange(1, min(refMaxOpSecs, ds-o.Off)).Draw(t, "len")
			o.Preflush = rapid.IntRange(0, 5).Draw(t, "preflush") == 0
			o.FUA = rapid.IntRange(0, 3).Draw(t, "fua") == 0
		}
	}
	// Interleave: each non-mark op has a submit event then a complete event; a mark is one event.
	state := make([]int, n) // 0 unsubmitted, 1 in flight, 2 done
	for seq := 0; ; seq++ {
		var avail []int
		for i := range ops {
			if state[i] < 2 {
				avail = append(avail, i)
			}
		}
		if len(avail) == 0 {
			break
		}
		i := avail[rapid.IntRange(0, len(avail)-1).Draw(t, "next")]
		switch {
		case ops[i].Kind == pclog.KindMark:
			ops[i].S, ops[i].C, state[i] = seq, seq, 2
		case state[i] == 0:
			ops[i].S, state[i] = seq, 1
		default:
			ops[i].C, state[i] = seq, 2
		}
	}
	sort.Slice(ops, func(a, b int) bool { return ops[a].C < ops[b].C })
	h.Ops = ops
	return h
}

// ---- enumeration through the implementation ----

// implStates runs States and returns the states with their images.
func implStates(t refTB, h *refHist, e *model.Epoch, opt model.EnumOptions) ([]*model.State, []refImg, bool) {
	t.Helper()
	var sts []*model.State
	var ims []refImg
	var ierr error
	trunc, err := e.States(opt, func(st *model.State) bool {
		ext, err := e.Image(st)
		if err != nil {
			ierr = fmt.Errorf("Image(%s): %w", e.ID(st), err)
			return false
		}
		sts = append(sts, st)
		ims = append(ims, implImg(t, h, ext))
		return true
	})
	if err != nil {
		t.Fatalf("States(%+v): %v", opt, err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return sts, ims, trunc
}

// exhaustiveSize is the number of choice combinations Exhaustive would walk at this epoch.
func exhaustiveSize(e *model.Epoch) float64 {
	n := 1.0
	for _, i := range e.Pending {
		k := 2.0
		if e.M == model.Torn && e.Sectors(i) > 1 {
			k += float64(int(1)<<e.Sectors(i)) - 2
		}
		n *= k
	}
	for range e.Discards {
		n *= 2
	}
	for range e.Pairs {
		n *= 2
	}
	for _, c := range e.Carries {
		n *= float64(1 + len(c))
	}
	return n
}

func refImgList(s map[refImg]bool) []string {
	var out []string
	for im := range s {
		out = append(out, im.String())
	}
	slices.Sort(out)
	return out
}
