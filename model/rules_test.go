package model_test

// One test per rule of doc.go / durability-model.md, on hand-built histories. Sequence numbers
// are written out; ops are listed in completion order (op index = position).

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

func rW(dev, off, n, s, c int) refOp {
	return refOp{Kind: pclog.KindWrite, Dev: dev, Off: off, Len: n, S: s, C: c}
}
func rWZ(dev, off, n, s, c int) refOp {
	return refOp{Kind: pclog.KindWriteZeroes, Dev: dev, Off: off, Len: n, S: s, C: c}
}
func rDiscard(dev, off, n, s, c int) refOp {
	return refOp{Kind: pclog.KindDiscard, Dev: dev, Off: off, Len: n, S: s, C: c}
}
func rFlush(dev, s, c int) refOp                { return refOp{Kind: pclog.KindFlush, Dev: dev, S: s, C: c} }
func rMark(name string, sc int) refOp           { return refOp{Kind: pclog.KindMark, Name: name, S: sc, C: sc} }
func rFUA(o refOp) refOp                        { o.FUA = true; return o }
func rPreflush(o refOp) refOp                   { o.Preflush = true; return o }
func rHist(devSec []int, ops ...refOp) *refHist { return &refHist{Ops: ops, DevSec: devSec} }

// ruleState is one enumerated state with its image.
type ruleState struct {
	id string
	st *model.State
	im refImg
}

// ruleStates enumerates (exhaustively, or with opt) the states of model m at the crash point
// with sequence T, failing if T is not a crash point of m.
func ruleStates(t *testing.T, h *refHist, m model.Model, pol model.DiscardPolicy, T int, opt ...model.EnumOptions) []ruleState {
	t.Helper()
	mh := h.toModel(t)
	for _, p := range mh.Points(m) {
		if int(p.T) != T {
			continue
		}
		e := mh.Epoch(m, pol, p)
		o := model.EnumOptions{Strategy: model.Exhaustive}
		if len(opt) > 0 {
			o = opt[0]
		}
		sts, ims, _ := implStates(t, h, e, o)
		out := make([]ruleState, len(sts))
		for k := range sts {
			out[k] = ruleState{e.ID(sts[k]), sts[k], ims[k]}
		}
		if len(out) == 0 {
			t.Fatalf("%s T=%d: no state", m, T)
		}
		return out
	}
	t.Fatalf("T=%d is not a crash point of %s (points %v)", T, m, refPoints(h, m))
	return nil
}

// sec returns the version of device dev sector s.
func (r ruleState) sec(dev, s int) int16 { return r.im[dev*refDevStride+s] }

// shows reports whether sector s of dev holds sector k of op i.
func (r ruleState) shows(dev, s, i, k int) bool { return r.sec(dev, s) == refVer(i, k) }

// allStrategies runs check on the states of every strategy (and the exhaustive ones).
func allStrategies(t *testing.T, h *refHist, m model.Model, pol model.DiscardPolicy, T int, check func(ruleState)) {
	t.Helper()
	for _, o := range []model.EnumOptions{
		{Strategy: model.Exhaustive}, {Strategy: model.DropK, K: 1}, {Strategy: model.DropK, K: 2},
		{Strategy: model.KeepK, K: 1}, {Strategy: model.KeepK, K: 2}, {Strategy: model.Sample, Seed: 7, Max: 50},
	} {
		for _, r := range ruleStates(t, h, m, pol, T, o) {
			check(r)
		}
	}
}

// (a) The loop-device case: W is in flight while F runs (sF < cW < cF). F completed, yet some
// reorder state lacks W; a write that completed before sF is in every state.
func TestRule_FlushCoversOnlyCompletedBeforeSubmit(t *testing.T) {
	h := rHist([]int{4},
		rW(0, 1, 1, 0, 1), // op0: completed before F was submitted
		rW(0, 0, 1, 2, 4), // op1: submitted before F, completes while F runs
		rFlush(0, 3, 5),   // op2
	)
	mh := h.toModel(t)
	if !mh.Durable(model.Reorder, 0, 6) || mh.Durable(model.Reorder, 1, 6) {
		t.Fatalf("Durable at end: op0 %v (want true), op1 %v (want false)", mh.Durable(model.Reorder, 0, 6), mh.Durable(model.Reorder, 1, 6))
	}
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		missing := false
		for _, r := range ruleStates(t, h, m, model.DiscardEither, 6) {
			if !r.shows(0, 1, 0, 0) {
				t.Errorf("%s %s: op0 (completed before the flush was submitted) missing", m, r.id)
			}
			missing = missing || r.sec(0, 0) == refBase
		}
		if !missing {
			t.Errorf("%s: every end state holds op1, though it was in flight while the flush ran", m)
		}
	}
}

// (b) A completed FUA write is present in every state, under every strategy; before it
// completes it may be missing.
func TestRule_FUAWriteDurableOnceCompleted(t *testing.T) {
	h := rHist([]int{4, 2},
		rFUA(rW(0, 0, 2, 0, 2)), // op0 FUA, concurrent with op1
		rW(0, 2, 2, 1, 3),       // op1 not FUA, other sectors
		rW(1, 0, 2, 4, 5),       // op2 other device
	)
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		missing := false
		for _, r := range ruleStates(t, h, m, model.DiscardEither, 2) { // just before op0 completes
			missing = missing || !r.shows(0, 0, 0, 0) || !r.shows(0, 1, 0, 1)
		}
		if !missing {
			t.Errorf("%s: FUA op0 present in every state before it completed", m)
		}
		allStrategies(t, h, m, model.DiscardEither, 6, func(r ruleState) {
			if !r.shows(0, 0, 0, 0) || !r.shows(0, 1, 0, 1) {
				t.Errorf("%s %s: completed FUA op0 not whole: %s", m, r.id, r.im)
			}
		})
	}
}

// (c) A write completed before a completed flush's submission is in every state (whole, also
// under torn), under every strategy.
func TestRule_FlushCoversCompletedBeforeSubmit(t *testing.T) {
	h := rHist([]int{4},
		rW(0, 0, 3, 0, 1), // op0, 3 sectors
		rFlush(0, 2, 4),   // op1
		rW(0, 3, 1, 3, 5), // op2 pending
	)
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		missing := false
		for _, r := range ruleStates(t, h, m, model.DiscardEither, 4) { // before the flush completes
			missing = missing || r.sec(0, 0) == refBase
		}
		if !missing {
			t.Errorf("%s: op0 durable before the flush completed", m)
		}
		allStrategies(t, h, m, model.DiscardEither, 6, func(r ruleState) {
			for k := 0; k < 3; k++ {
				if !r.shows(0, k, 0, k) {
					t.Errorf("%s %s: flushed op0 sector %d missing: %s", m, r.id, k, r.im)
				}
			}
		})
	}
}

// (d) Overlapping writes never resurrect a version older than a durable one.
func TestRule_NoResurrectionOlderThanDurable(t *testing.T) {
	h := rHist([]int{2},
		rW(0, 0, 2, 0, 1),       // op0 old
		rFUA(rW(0, 0, 2, 2, 3)), // op1 durable, submitted after op0 completed
		rW(0, 1, 1, 4, 5),       // op2 newer, pending
	)
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		seen := map[int16]bool{}
		allStrategies(t, h, m, model.DiscardEither, 6, func(r ruleState) {
			for s := 0; s < 2; s++ {
				v := r.sec(0, s)
				seen[v] = true
				if v == refBase || v == refVer(0, s) {
					t.Errorf("%s %s: sector %d resurrects %s under durable op1", m, r.id, s, r.im)
				}
			}
		})
		if !seen[refVer(2, 0)] || !seen[refVer(1, 1)] {
			t.Errorf("%s: sector 1 should show op1 or op2, saw %v", m, seen)
		}
	}
}

// R4 as doc.go generalises it: O completed before a durable D' was submitted stays hidden even
// when a concurrent durable d that completed later (the contract's "newest durable") does not
// order it. The contract's literal wording would allow O; physically O precedes D', both land,
// so O is never the last writer.
func TestR4_GeneralisedNoResurrection(t *testing.T) {
	h := rHist([]int{1},
		rW(0, 0, 1, 1, 2),       // op0 O
		rFUA(rW(0, 0, 1, 3, 4)), // op1 D': submitted after O completed
		rFUA(rW(0, 0, 1, 0, 5)), // op2 d: in flight across both, newest durable by completion
	)
	const T = 6
	if !refLiteralAllows(h, model.DiscardEither, T, 0, 0, 0) {
		t.Fatalf("the contract's literal rule should allow op0 here (this test documents its gap)")
	}
	if refR4Allows(h, model.DiscardEither, T, 0, 0, 0) {
		t.Fatalf("R4 should forbid op0")
	}
	ref := refImages(h, model.Reorder, model.DiscardEither, T)
	for im := range ref {
		if im[0] == refVer(0, 0) {
			t.Fatalf("reference shows op0: %s", im)
		}
	}
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		got := map[int16]bool{}
		for _, r := range ruleStates(t, h, m, model.DiscardEither, T) {
			got[r.sec(0, 0)] = true
		}
		want := map[int16]bool{refVer(1, 0): true, refVer(2, 0): true}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: sector 0 versions %v, want exactly op1 or op2 %v", m, got, want)
		}
	}
}

// (e) Whole-operation atomicity: two concurrent overlapping ops that both landed show the same
// winner on every shared sector; both winners occur. Torn may mix.
func TestRule_WholeOpAtomicity(t *testing.T) {
	h := rHist([]int{4},
		rW(0, 0, 3, 0, 2), // op0 A: sectors 0-2
		rW(0, 1, 3, 1, 3), // op1 B: sectors 1-3, concurrent with A
	)
	winners := map[string]bool{}
	for _, r := range ruleStates(t, h, model.Reorder, model.DiscardEither, 4) {
		if slices.Contains(r.st.Dropped, 0) || slices.Contains(r.st.Dropped, 1) {
			continue
		}
		w1, w2 := (r.sec(0, 1)-1)/16, (r.sec(0, 2)-1)/16
		if w1 != w2 {
			t.Errorf("reorder %s: both landed but sector 1 shows op%d and sector 2 op%d", r.id, w1, w2)
		}
		winners[fmt.Sprint(w1)] = true
	}
	if !winners["0"] || !winners["1"] {
		t.Errorf("reorder: winners over the shared sectors %v, want both op0 and op1", winners)
	}
	mixed := false
	for _, r := range ruleStates(t, h, model.Torn, model.DiscardEither, 4) {
		mixed = mixed || (r.shows(0, 1, 0, 1) && r.shows(0, 2, 1, 1))
	}
	if !mixed {
		t.Errorf("torn: no state with sector 1 from op0 and sector 2 from op1")
	}
}

// (f) Torn: a multi-sector possibly-persisted op may land any subset of its sectors; a durable
// one lands whole; reorder keeps it atomic.
func TestRule_TornAnySubset(t *testing.T) {
	h := rHist([]int{4, 4},
		rW(0, 0, 3, 0, 1),       // op0 pending, 3 sectors
		rFUA(rW(1, 0, 3, 2, 3)), // op1 durable, 3 sectors
	)
	subsets := func(m model.Model) map[int]bool {
		out := map[int]bool{}
		for _, r := range ruleStates(t, h, m, model.DiscardEither, 4) {
			set := 0
			for k := 0; k < 3; k++ {
				if r.shows(0, k, 0, k) {
					set |= 1 << k
				}
				if !r.shows(1, k, 1, k) {
					t.Errorf("%s %s: durable op1 torn: %s", m, r.id, r.im)
				}
			}
			out[set] = true
		}
		return out
	}
	if got := subsets(model.Torn); len(got) != 8 {
		t.Errorf("torn: op0 landed sector subsets %v, want all 8", got)
	}
	if got := subsets(model.Reorder); len(got) != 2 || !got[0] || !got[7] {
		t.Errorf("reorder: op0 landed sector subsets %v, want only none and all", got)
	}
}

// (g) DISCARD reads zeros (zero), the previous content (keep), or either, chosen per discard
// (either); WRITE_ZEROES always reads zeros.
func TestRule_DiscardPolicies(t *testing.T) {
	h := rHist([]int{4},
		rW(0, 0, 4, 0, 1),       // op0
		rDiscard(0, 0, 2, 2, 3), // op1 discard sectors 0-1
		rWZ(0, 2, 2, 4, 5),      // op2 write-zeroes sectors 2-3
		rFlush(0, 6, 7),         // op3: everything durable
	)
	const T = 8
	want := map[model.DiscardPolicy][]string{
		model.DiscardZero:   {"z z"},
		model.DiscardKeep:   {"0.0 0.1"},
		model.DiscardEither: {"0.0 0.1", "z z"},
	}
	for pol, w := range want {
		for _, m := range []model.Model{model.Reorder, model.Torn, model.Prefix, model.Flush} {
			got := map[string]bool{}
			for _, r := range ruleStates(t, h, m, pol, T) {
				got[fmt.Sprintf("%s %s", refVerName(r.sec(0, 0)), refVerName(r.sec(0, 1)))] = true
				if r.sec(0, 2) != refZero || r.sec(0, 3) != refZero {
					t.Errorf("%s/%s %s: WRITE_ZEROES sectors not zero: %s", m, pol, r.id, r.im)
				}
			}
			var gl []string
			for k := range got {
				gl = append(gl, k)
			}
			slices.Sort(gl)
			if fmt.Sprint(gl) != fmt.Sprint(w) {
				t.Errorf("%s/%s: discarded sectors read %v, want %v", m, pol, gl, w)
			}
		}
	}
}

func refVerName(v int16) string {
	switch v {
	case refBase:
		return "b"
	case refZero:
		return "z"
	}
	return fmt.Sprintf("%d.%d", (v-1)/16, (v-1)%16)
}

// (h) Flushes are per device: a flush of device 1 does not make device 0's writes durable.
func TestRule_FlushIsPerDevice(t *testing.T) {
	h := rHist([]int{2, 2},
		rW(0, 0, 1, 0, 1), // op0 dev0
		rW(1, 0, 1, 2, 3), // op1 dev1
		rFlush(1, 4, 5),   // op2 flush dev1
	)
	mh := h.toModel(t)
	if mh.Durable(model.Reorder, 0, 6) || !mh.Durable(model.Reorder, 1, 6) {
		t.Fatalf("Durable: dev0 write %v (want false), dev1 write %v (want true)", mh.Durable(model.Reorder, 0, 6), mh.Durable(model.Reorder, 1, 6))
	}
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		missing := false
		allStrategies(t, h, m, model.DiscardEither, 6, func(r ruleState) {
			if !r.shows(1, 0, 1, 0) {
				t.Errorf("%s %s: dev1 write missing after dev1 flush", m, r.id)
			}
			missing = missing || r.sec(0, 0) == refBase
		})
		if !missing {
			t.Errorf("%s: dev0 write present in every state; a dev1 flush made it durable", m)
		}
	}
}

// (i) A data op with PREFLUSH acts as a FLUSH with its submit and complete points (and is a
// barrier crash point); it covers only its own device; the op itself is not made durable.
func TestRule_PreflushActsAsFlush(t *testing.T) {
	h := rHist([]int{2, 2},
		rW(0, 0, 1, 0, 1),            // op0 dev0
		rW(1, 0, 1, 2, 3),            // op1 dev1
		rPreflush(rW(0, 1, 1, 4, 5)), // op2 dev0 PREFLUSH write
	)
	mh := h.toModel(t)
	if !mh.Durable(model.Reorder, 0, 6) || mh.Durable(model.Reorder, 1, 6) || mh.Durable(model.Reorder, 2, 6) {
		t.Fatalf("Durable at end: op0 %v op1 %v op2 %v, want true false false", mh.Durable(model.Reorder, 0, 6), mh.Durable(model.Reorder, 1, 6), mh.Durable(model.Reorder, 2, 6))
	}
	if got := refPointsOf(mh, model.Reorder); fmt.Sprint(got) != "[5 6]" {
		t.Errorf("reorder points %v, want [5 6] (before the PREFLUSH write completes, end)", got)
	}
	if got := refPointsOf(mh, model.Flush); fmt.Sprint(got) != "[6]" {
		t.Errorf("flush points %v, want [6]", got)
	}
	var miss1, miss2 bool
	allStrategies(t, h, model.Reorder, model.DiscardEither, 6, func(r ruleState) {
		if !r.shows(0, 0, 0, 0) {
			t.Errorf("%s: op0 missing after the PREFLUSH write completed", r.id)
		}
		miss1 = miss1 || r.sec(1, 0) == refBase
		miss2 = miss2 || r.sec(0, 1) == refBase
	})
	if !miss1 || !miss2 {
		t.Errorf("op1 (other device) may be missing: %v; op2 (the PREFLUSH write) may be missing: %v; want both true", miss1, miss2)
	}
}

func refPointsOf(mh *model.History, m model.Model) []int {
	var out []int
	for _, p := range mh.Points(m) {
		out = append(out, int(p.T))
	}
	return out
}

// (j) Crash points per model, as doc.go lists them, with the last mark of each.
func TestRule_CrashPointsPerModel(t *testing.T) {
	h := rHist([]int{4, 4},
		rW(0, 0, 1, 0, 2),            // op0 (T: 3 after)
		rFlush(0, 1, 3),              // op1 FLUSH
		rMark("a", 4),                // op2
		rFUA(rW(0, 1, 1, 5, 6)),      // op3 FUA
		rPreflush(rW(1, 0, 1, 7, 8)), // op4 PREFLUSH
		rW(1, 1, 1, 9, 10),           // op5 plain
		rMark("b", 11),               // op6
	)
	mh := h.toModel(t)
	want := map[model.Model]string{
		model.Prefix:   "[0 3 4 5 7 9 11 12]",
		model.Coalesce: "[3 5 6 8 12]",
		model.Flush:    "[4 7 9 12]",
		model.Reorder:  "[3 5 6 8 12]",
		model.Torn:     "[3 5 6 8 12]",
	}
	for m, w := range want {
		if got := refPointsOf(mh, m); fmt.Sprint(got) != w {
			t.Errorf("%s points %v, want %s", m, got, w)
		}
		if got := refPoints(h, m); fmt.Sprint(got) != w {
			t.Errorf("reference %s points %v, want %s", m, got, w)
		}
	}
	var marks []string
	for _, p := range mh.Points(model.Reorder) {
		marks = append(marks, fmt.Sprintf("%d:%q/%d", p.T, p.LastMark, p.MarkOp))
	}
	if got, w := fmt.Sprint(marks), `[3:""/-1 5:"a"/2 6:"a"/2 8:"a"/2 12:"b"/6]`; got != w {
		t.Errorf("reorder last marks %s, want %s", got, w)
	}
	if got := mh.End(); got != 12 {
		t.Errorf("End() = %d, want 12", got)
	}
}

// (k) Coalesce: the pending writes persist in order, each with its own content or the newest
// content issued for its range before the crash point (not one issued later, not one to another
// range); prefix never carries.
func TestRule_CoalesceCarries(t *testing.T) {
	h := rHist([]int{2},
		rW(0, 0, 2, 0, 2), // op0 A
		rW(0, 0, 2, 1, 4), // op1 B: same range, submitted before A completed
		rW(0, 0, 1, 3, 5), // op2 C: other range (1 sector)
	)
	imgs := func(m model.Model, T int) string {
		got := map[string]bool{}
		for _, r := range ruleStates(t, h, m, model.DiscardEither, T) {
			got[refVerName(r.sec(0, 0))+" "+refVerName(r.sec(0, 1))] = true
		}
		var l []string
		for k := range got {
			l = append(l, k)
		}
		slices.Sort(l)
		return fmt.Sprint(l)
	}
	// At the end (T=6): nothing, A, A carrying B (= B), A then B, A B C.
	if got, w := imgs(model.Coalesce, 6), "[0.0 0.1 1.0 1.1 2.0 1.1 b b]"; got != w {
		t.Errorf("coalesce at the end: %s, want %s", got, w)
	}
	if got, w := imgs(model.Prefix, 3), "[0.0 0.1]"; got != w {
		t.Errorf("prefix after A: %s, want %s", got, w)
	}
	// A alone carrying B's content: a state no prefix has.
	carried := false
	for _, r := range ruleStates(t, h, model.Coalesce, model.DiscardEither, 6) {
		if r.shows(0, 0, 1, 0) && r.shows(0, 1, 1, 1) && strings.Contains(r.id, "c0=1") && (strings.Contains(r.id, ":k0:") || strings.Contains(r.id, ":d1.2")) {
			carried = true
		}
	}
	if !carried {
		t.Errorf("coalesce never lands A alone carrying B's content")
	}
	// B submitted only after the crash point: no carry.
	h2 := rHist([]int{2}, rW(0, 0, 2, 0, 1), rFUA(rW(0, 1, 1, 2, 3)), rW(0, 0, 2, 4, 5))
	for _, r := range ruleStates(t, h2, model.Coalesce, model.DiscardEither, 3) {
		if r.shows(0, 0, 2, 0) {
			t.Errorf("coalesce %s: carries a write submitted after the crash point: %s", r.id, r.im)
		}
	}
	mh := h.toModel(t)
	if _, _, err := mh.Resolve("coalesce:0:d1.2:c0=1"); err != nil {
		t.Errorf("carry state ID does not resolve: %v", err)
	}
	if _, _, err := mh.Resolve("coalesce:0:d1.2:c0=2"); err == nil {
		t.Errorf("carry from a write to another range accepted")
	}
	if _, _, err := mh.Resolve("coalesce:0:d1"); err == nil {
		t.Errorf("a non-prefix landing accepted under coalesce")
	}
}

// Covered marks: a mark is covered in a state when every data op completed before it landed
// whole there.
func TestCoveredMarks(t *testing.T) {
	h := rHist([]int{2},
		rW(0, 0, 2, 0, 1), // op0
		rMark("a", 2),     // op1
		rW(0, 1, 1, 3, 4), // op2
		rMark("b", 5),     // op3
	)
	mh := h.toModel(t)
	pts := mh.Points(model.Torn)
	e := mh.Epoch(model.Torn, model.DiscardEither, pts[len(pts)-1])
	for id, want := range map[string]string{
		"torn:%d":         "[a b]",
		"torn:%d:d2":      "[a]",
		"torn:%d:d0":      "[]",
		"torn:%d:t0=1":    "[]",
		"torn:%d:d0.2":    "[]",
		"torn:%d:k0:t0=0": "[]",
	} {
		_, st, err := mh.Resolve(fmt.Sprintf(id, e.Point.Index))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(e.CoveredMarks(st)); got != want {
			t.Errorf("%s: covered marks %s, want %s", id, got, want)
		}
	}
}

// R4 and discards: a durable DISCARD read as the previous content (policies keep, either) does
// not hide what was under it, so R4's "durable D submitted after O completed" must not count
// such a discard. The implementation gets this right; doc.go's R4 wording does not say it.
func TestR4_DurableDiscardReadAsPreviousHidesNothing(t *testing.T) {
	h := rHist([]int{1},
		rW(0, 0, 1, 0, 1),             // op0, never made durable
		rFUA(rDiscard(0, 0, 1, 2, 3)), // op1, durable (FUA), submitted after op0 completed
	)
	for pol, want := range map[model.DiscardPolicy]string{
		model.DiscardZero:   "[z]",
		model.DiscardKeep:   "[0.0 b]",
		model.DiscardEither: "[0.0 b z]",
	} {
		for _, m := range []model.Model{model.Reorder, model.Torn} {
			got := map[string]bool{}
			for _, r := range ruleStates(t, h, m, pol, 4) {
				got[refVerName(r.sec(0, 0))] = true
			}
			var l []string
			for k := range got {
				l = append(l, k)
			}
			slices.Sort(l)
			if fmt.Sprint(l) != want {
				t.Errorf("%s/%s: sector 0 reads %v, want %s", m, pol, l, want)
			}
		}
	}
}

// (R8) On an in-order device (prefix, flush, coalesce) a completed FUA write means everything
// before it in the device's order persisted too: no state shows FUA op B landed while the plain
// write A that completed before it did not. Reorder and torn are not in-order: there A may be lost.
func TestRule_InOrderFUAPersistsEverythingBefore(t *testing.T) {
	h := rHist([]int{4, 2},
		rW(0, 1, 1, 0, 1),       // op0 A: plain write, sector 1
		rW(1, 0, 1, 2, 3),       // op1: another device, not ordered by dev0's FUA
		rFUA(rW(0, 0, 1, 4, 5)), // op2 B: FUA write, sector 0
		rW(0, 2, 1, 6, 7),       // op3: after B, may be lost everywhere
	)
	mh := h.toModel(t)
	if !mh.Durable(model.Coalesce, 0, 8) || mh.Durable(model.Reorder, 0, 8) || mh.Durable(model.Coalesce, 1, 8) {
		t.Fatalf("Durable at end: op0 coalesce %v (want true), reorder %v (want false); op1 coalesce %v (want false)",
			mh.Durable(model.Coalesce, 0, 8), mh.Durable(model.Reorder, 0, 8), mh.Durable(model.Coalesce, 1, 8))
	}
	for _, m := range []model.Model{model.Coalesce, model.Prefix, model.Flush} {
		lostOther := false
		for _, T := range refPoints(h, m) {
			for _, r := range ruleStates(t, h, m, model.DiscardEither, T) {
				if r.shows(0, 0, 2, 0) && !r.shows(0, 1, 0, 0) {
					t.Errorf("%s %s (T=%d): FUA op2 landed but op0, completed before it, did not: %s", m, r.id, T, r.im)
				}
				lostOther = lostOther || (r.shows(0, 0, 2, 0) && r.sec(1, 0) == refBase)
			}
		}
		if m == model.Coalesce && !lostOther {
			t.Errorf("%s: op1 (other device) present in every state with op2: the FUA ordered another device", m)
		}
	}
	lost := false
	for _, r := range ruleStates(t, h, model.Reorder, model.DiscardEither, 8) {
		lost = lost || (r.shows(0, 0, 2, 0) && !r.shows(0, 1, 0, 0))
	}
	if !lost {
		t.Errorf("reorder: no end state lost op0 while FUA op2 landed (reorder is not in-order)")
	}
}

// (R7, settling) A discard's zero-or-keep choice under policy either exists only where it can
// change the image: not once a durable rewrite that follows it covers its range (R4 hides it),
// not where what it would keep reads as zeros anyway, and not for a possibly-persisted discard
// under reorder/torn (ignored = not landed); coalesce persists in order, so there it stays.
func TestRule_DiscardChoiceOnlyWhereItMatters(t *testing.T) {
	epochAt := func(h *refHist, m model.Model, T int, zeroBase bool) *model.Epoch {
		t.Helper()
		mh := h.toModel(t)
		if zeroBase {
			mh.BaseZero = func(uint16, int64, int64) bool { return true }
		}
		for _, p := range mh.Points(m) {
			if int(p.T) == T {
				return mh.Epoch(m, model.DiscardEither, p)
			}
		}
		t.Fatalf("T=%d not a crash point of %s", T, m)
		return nil
	}
	// op0 write, op1 discard, op2 flush: the discard is durable over op0's data: a real choice.
	// Then op3 rewrites the range and op4 flushes: the discard is hidden and settles.
	h := rHist([]int{2},
		rW(0, 0, 2, 0, 1),
		rDiscard(0, 0, 2, 2, 3),
		rFlush(0, 4, 5),
		rW(0, 0, 2, 6, 7),
		rFlush(0, 8, 9),
		rMark("end", 10),
	)
	if e := epochAt(h, model.Reorder, 9, false); fmt.Sprint(e.Discards) != "[1]" {
		t.Errorf("before the rewrite is durable: discards %v, want [1]", e.Discards)
	}
	e := epochAt(h, model.Reorder, 11, false)
	if len(e.Discards) != 0 || slices.Contains(e.Unsettled(), 1) {
		t.Errorf("after a durable rewrite covered it: discards %v, unsettled %v; want the discard settled", e.Discards, e.Unsettled())
	}
	// A durable discard of a never-written range: a choice over an unknown base, none over zeros.
	h = rHist([]int{2}, rFUA(rDiscard(0, 0, 2, 0, 1)), rMark("m", 2))
	if e := epochAt(h, model.Reorder, 3, false); fmt.Sprint(e.Discards) != "[0]" {
		t.Errorf("unknown base: discards %v, want [0]", e.Discards)
	}
	if e := epochAt(h, model.Reorder, 3, true); len(e.Discards) != 0 {
		t.Errorf("zero base: discards %v, want none (both outcomes read zeros)", e.Discards)
	}
	// A possibly-persisted discard: reorder expresses "ignored" as "not landed"; coalesce cannot.
	h = rHist([]int{2}, rW(0, 0, 2, 0, 1), rDiscard(0, 0, 1, 2, 3), rW(0, 1, 1, 4, 5), rMark("m", 6))
	if e := epochAt(h, model.Reorder, 7, false); len(e.Discards) != 0 || !slices.Contains(e.Pending, 1) {
		t.Errorf("reorder: discards %v pending %v; want the discard pending and no separate choice", e.Discards, e.Pending)
	}
	if e := epochAt(h, model.Coalesce, 7, false); fmt.Sprint(e.Discards) != "[1]" {
		t.Errorf("coalesce: discards %v, want [1]", e.Discards)
	}
}

// (R6, sector size) On a 4 KiB-sector device a write tears only at 4 KiB boundaries; a log with
// an operation not aligned to the sector size was not recorded on such a device.
func TestRule_TornAtTheSectorSize(t *testing.T) {
	h := rHist([]int{32}, rW(0, 0, 16, 0, 1), rMark("m", 2)) // a 16-sector (8 KiB) write
	mh := h.toModel(t)
	if err := mh.SetSectorSize(4096); err != nil {
		t.Fatal(err)
	}
	pts := mh.Points(model.Torn)
	e := mh.Epoch(model.Torn, model.DiscardEither, pts[0])
	if n := e.Sectors(0); n != 2 {
		t.Fatalf("an 8 KiB write has %d sectors of 4 KiB, want 2", n)
	}
	n := 0
	if _, err := e.States(model.EnumOptions{Strategy: model.Exhaustive}, func(st *model.State) bool {
		n++
		ext, err := e.Image(st)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ext[0] {
			if x.Off%4096 != 0 || x.Len%4096 != 0 {
				t.Errorf("state %s: extent %+v tears inside a 4 KiB sector", e.ID(st), x)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n != 4 { // dropped, whole, first half, second half
		t.Errorf("%d torn states of a 2-sector write, want 4", n)
	}
	h = rHist([]int{32}, rW(0, 1, 8, 0, 1))
	if err := h.toModel(t).SetSectorSize(4096); !errors.Is(err, model.ErrSectorSize) {
		t.Errorf("a write at byte 512 on a 4 KiB-sector device: err %v, want ErrSectorSize", err)
	}
}
