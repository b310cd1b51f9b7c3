package model_test

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// refExhaustiveLimit bounds the exhaustive walk (and the reference search) per crash point.
// Larger points are counted and skipped (checking them needs the reference set too); the
// generator keeps almost all points below it.
const refExhaustiveLimit = 1 << 13

var refPolicies = []model.DiscardPolicy{model.DiscardEither, model.DiscardZero, model.DiscardKeep}

// propCheckModel: for a random history, every crash point of model m matches the contract's list,
// every state any strategy produces is allowed by the reference (soundness), Exhaustive produces
// exactly the reference set (completeness), and every state's ID resolves back to the same state
// and image.
func propCheckModel(t *rapid.T, m model.Model, c *propCounts) {
	h := refGenHistory(t, refMaxOps)
	pol := rapid.SampledFrom(refPolicies).Draw(t, "policy")
	mh := h.toModel(t)
	// With a base known to be zeros, discards whose kept content is zeros settle: compare images
	// with the base read as zeros on both sides.
	zeroBase := rapid.Bool().Draw(t, "zero_base")
	norm := func(im refImg) refImg { return im }
	if zeroBase {
		mh.BaseZero = func(uint16, int64, int64) bool { return true }
		norm = func(im refImg) refImg {
			for k, v := range im {
				if v == refBase {
					im[k] = refZero
				}
			}
			return im
		}
	}
	pts := mh.Points(m)
	want := refPoints(h, m)
	var got []int
	for k, p := range pts {
		got = append(got, int(p.T))
		if p.Index != k {
			t.Fatalf("point %d has Index %d", k, p.Index)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s crash points: got T=%v, want %v\n%s", m, got, want, h)
	}
	// One incremental walk over every crash point: the round trip below resolves each state's
	// ID with a fresh walk, so the two must agree.
	w := mh.Walk(m, pol)
	for _, p := range pts {
		e := w.Epoch(p)
		c.points++
		if exhaustiveSize(e) > refExhaustiveLimit {
			c.skipped++
			continue
		}
		if len(e.Pairs) > 0 {
			c.withPairs++
		}
		if len(e.Discards) > 0 {
			c.withDiscards++
		}
		ref := map[refImg]bool{}
		for im := range refImages(h, m, pol, int(p.T)) {
			ref[norm(im)] = true
		}
		sts, ims, trunc := implStates(t, h, e, model.EnumOptions{Strategy: model.Exhaustive})

		if trunc {
			t.Fatalf("exhaustive without Max reported truncation")
		}
		have := map[refImg]bool{}
		for k, raw := range ims {
			im := norm(raw)
			have[im] = true
			if !ref[im] {
				t.Fatalf("UNSOUND: %s/%s point %d (T=%d, %s): state %s gives image\n  %s\nnot allowed by the contract; allowed:\n  %v\n%s",
					m, pol, p.Index, p.T, p.Reason, e.ID(sts[k]), im, refImgList(ref), h)
			}
			if k < 64 || k%61 == 0 {
				propRoundTrip(t, h, mh, e, sts[k], raw)
			}
		}
		propMayShow(t, h, e, ims, norm)
		c.states += len(sts)
		c.images += len(ref)
		for im := range ref {
			if !have[im] {
				t.Fatalf("INCOMPLETE: %s/%s point %d (T=%d, %s): allowed image\n  %s\nnever produced by Exhaustive (%d states); produced:\n  %v\n%s",
					m, pol, p.Index, p.T, p.Reason, im, len(sts), refImgList(have), h)
			}
		}
		seed := rapid.Uint64().Draw(t, "seed")
		for _, opt := range []model.EnumOptions{
			{Strategy: model.DropK, K: 1}, {Strategy: model.DropK, K: 2},
			{Strategy: model.KeepK, K: 1}, {Strategy: model.KeepK, K: 2},
			{Strategy: model.Sample, Seed: seed, Max: 16},
		} {
			sts, ims, _ := implStates(t, h, e, opt)
			for k, im := range ims {
				if !ref[norm(im)] {
					t.Fatalf("UNSOUND (%s K=%d): %s/%s point %d (T=%d): state %s gives image %s, not allowed\n%s",
						opt.Strategy, opt.K, m, pol, p.Index, p.T, e.ID(sts[k]), im, h)
				}
			}
		}
	}
}

// propRoundTrip: both printed forms of st resolve to the same epoch, state and image.
func propRoundTrip(t refTB, h *refHist, mh *model.History, e *model.Epoch, st *model.State, im refImg) {
	t.Helper()
	for _, id := range []string{e.ID(st), st.String()} {
		e2, st2, err := mh.Resolve(id)
		if err != nil {
			t.Fatalf("state ID %q (String %q) does not resolve: %v\n%s", id, st.String(), err, h)
		}
		if e2.Point.Index != e.Point.Index || e2.Point.T != e.Point.T || e2.M != e.M || e2.Policy != e.Policy {
			t.Fatalf("state ID %q resolves to point %d T=%d %s/%s, want point %d T=%d %s/%s", id,
				e2.Point.Index, e2.Point.T, e2.M, e2.Policy, e.Point.Index, e.Point.T, e.M, e.Policy)
		}
		if st2.String() != st.String() {
			t.Fatalf("state ID %q resolves to %q, want %q", id, st2.String(), st.String())
		}
		ext, err := e2.Image(st2)
		if err != nil {
			t.Fatalf("state ID %q: resolved state has no image: %v", id, err)
		}
		if im2 := implImg(t, h, ext); im2 != im {
			t.Fatalf("state ID %q: resolved image %s, original %s", id, im2, im)
		}
	}
}

type propCounts struct {
	histories, points, skipped, withPairs, withDiscards, states, images int
}

func propModelTest(t *testing.T, m model.Model) {
	var c propCounts
	rapid.Check(t, func(rt *rapid.T) {
		c.histories++
		propCheckModel(rt, m, &c)
	})
	t.Logf("%s: %d histories, %d crash points (%d skipped as too large for exhaustive comparison, %d with concurrent overlapping pairs, %d with open discards), %d exhaustive states, %d distinct allowed images",
		m, c.histories, c.points, c.skipped, c.withPairs, c.withDiscards, c.states, c.images)
}

func TestProp_ReorderMatchesReference(t *testing.T)  { propModelTest(t, model.Reorder) }
func TestProp_TornMatchesReference(t *testing.T)     { propModelTest(t, model.Torn) }
func TestProp_PrefixMatchesReference(t *testing.T)   { propModelTest(t, model.Prefix) }
func TestProp_FlushMatchesReference(t *testing.T)    { propModelTest(t, model.Flush) }
func TestProp_CoalesceMatchesReference(t *testing.T) { propModelTest(t, model.Coalesce) }

// TestProp_ReorderOtherPointsAreSubsumed checks the contract's justification for visiting only
// some crash points under reorder/torn: the states at any point t are a subset of the states at
// the next visited point. Reference only.
func TestProp_ReorderOtherPointsAreSubsumed(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := refGenHistory(rt, 7)
		pol := rapid.SampledFrom(refPolicies).Draw(rt, "policy")
		torn := rapid.Bool().Draw(rt, "torn")
		m := model.Reorder
		if torn {
			m = model.Torn
		}
		pts := refPoints(h, m)
		for tt := 0; tt <= h.end(); tt++ {
			next := -1
			for _, p := range pts {
				if p >= tt {
					next = p
					break
				}
			}
			if next < 0 {
				rt.Fatalf("no visited point at or after %d (points %v)", tt, pts)
			}
			at := refImages(h, m, pol, tt)
			nx := refImages(h, m, pol, next)
			for im := range at {
				if !nx[im] {
					rt.Fatalf("image %s possible at T=%d is not possible at the next visited point T=%d\n%s", im, tt, next, h)
				}
			}
		}
	})
}

// TestProp_R4HoldsInReference: every image of the (order-based) reference satisfies R4 as doc.go
// states it, and the contract's literal "newest durable d" rule per sector. It documents that R4
// is a consequence of the physical order, and the literal rule a weaker one.
func TestProp_R4HoldsInReference(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := refGenHistory(rt, 8)
		pol := rapid.SampledFrom(refPolicies).Draw(rt, "policy")
		torn := rapid.Bool().Draw(rt, "torn")
		tt := rapid.IntRange(0, h.end()).Draw(rt, "T")
		for im := range refReorderImages(h, tt, torn, pol) {
			for d, n := range h.DevSec {
				for s := 0; s < n; s++ {
					v := im[d*refDevStride+s]
					if v <= 0 {
						continue // base or zeros: no op identity to check
					}
					o := int(v-1) / 16
					if !refR4Allows(h, pol, tt, o, d, s) {
						rt.Fatalf("reference image %s shows op %d at dev %d sector %d, R4 forbids it\n%s", im, o, d, s, h)
					}
					if !refLiteralAllows(h, pol, tt, o, d, s) {
						rt.Fatalf("reference image %s shows op %d at dev %d sector %d, the contract's literal rule forbids it\n%s", im, o, d, s, h)
					}
				}
			}
		}
	})
}

// refHides: a durable op that overwrites what came before it. A DISCARD may read as the
// previous content (policies keep and either), so it hides nothing; doc.go's R4 does not say so
// (found by this test: with policy keep, a durable discard shows the older write under it).
func refHides(h *refHist, pol model.DiscardPolicy, d, t int) bool {
	return h.durable(d, t) && (h.Ops[d].Kind != pclog.KindDiscard || pol == model.DiscardZero)
}

// refR4Allows: doc.go's R4: op o may show at (dev, sec) unless a durable op D covering it was
// submitted after o completed.
func refR4Allows(h *refHist, pol model.DiscardPolicy, t, o, dev, sec int) bool {
	if h.Ops[o].S >= t {
		return false
	}
	for d := range h.Ops {
		if h.Ops[d].covers(dev, sec) && refHides(h, pol, d, t) && h.Ops[o].C < h.Ops[d].S {
			return false
		}
	}
	return true
}

// refLiteralAllows: the design document's wording: with d the newest (by completion) durable op
// covering the sector, it holds d's content or that of a possibly-persisted op covering it that
// was not completed before d was submitted.
func refLiteralAllows(h *refHist, pol model.DiscardPolicy, t, o, dev, sec int) bool {
	if h.Ops[o].S >= t {
		return false
	}
	d := -1
	for i := range h.Ops {
		if h.Ops[i].covers(dev, sec) && refHides(h, pol, i, t) {
			d = i // completion order: the last one is the newest
		}
	}
	return d < 0 || o == d || !(h.Ops[o].C < h.Ops[d].S)
}

// propMayShow: Epoch.MayShow, the per-sector statement of the rules that checkers (explore
// --verify) use, allows every sector version any exhaustive state shows (soundness: a checker
// built on it raises no false violation), and every version it allows is shown by some state
// (tightness: it misses nothing the model rules out), up to discards whose kept and zeroed
// contents read the same.
func propMayShow(t *rapid.T, h *refHist, e *model.Epoch, ims []refImg, norm func(refImg) refImg) {
	for d, n := range h.DevSec {
		for s := 0; s < n; s++ {
			var ops []int
			for i := range h.Ops {
				if h.Ops[i].isData() && h.Ops[i].covers(d, s) {
					ops = append(ops, i)
				}
			}
			allowed := map[int16]bool{}
			for _, v := range e.MayShow(ops) {
				var im refImg
				switch {
				case v.Src == model.SrcBase:
					im[0] = refBase
				case v.Src == model.SrcZero:
					im[0] = refZero
				default:
					im[0] = refVer(v.Src, s-h.Ops[v.Op].Off)
				}
				allowed[norm(im)[0]] = true
			}
			shown := map[int16]bool{}
			for _, raw := range ims {
				var im refImg
				im[0] = raw[d*refDevStride+s]
				v := norm(im)[0]
				shown[v] = true
				if !allowed[v] {
					t.Fatalf("MayShow UNSOUND: %s/%s point %d (T=%d): dev %d sector %d shows %s in some state; MayShow(%v) allows %v\n%s",
						e.M, e.Policy, e.Point.Index, e.Point.T, d, s, refVerName(v), ops, e.MayShow(ops), h)
				}
			}
			for v := range allowed {
				if !shown[v] {
					t.Fatalf("MayShow LOOSE: %s/%s point %d (T=%d): dev %d sector %d: MayShow(%v) allows %s, no state shows it\n%s",
						e.M, e.Policy, e.Point.Index, e.Point.T, d, s, ops, refVerName(v), h)
				}
			}
		}
	}
}
