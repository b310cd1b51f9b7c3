package model_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/powercut/powercut/model"
)

// strategyHist at its end (T=10):
//
//	op0 WRITE   dev0 [0,+1)  pending
//	op1 WRITE   dev0 [1,+2)  pending, 2 sectors (torn: 2 sequential tears, 2 exhaustive)
//	op2 DISCARD dev0 [3,+1)  FUA, landed; policy either: zeros or kept (over an unknown base)
//	op3 WRITE   dev1 [0,+1)  FUA, durable, concurrent with op4
//	op4 WRITE   dev1 [0,+1)  FUA, durable: the pair (3,4) has a free order
func strategyHist() *refHist {
	return rHist([]int{4, 1},
		rW(0, 0, 1, 0, 1),
		rW(0, 1, 2, 2, 3),
		rFUA(rDiscard(0, 3, 1, 4, 5)),
		rFUA(rW(1, 0, 1, 6, 8)),
		rFUA(rW(1, 0, 1, 7, 9)),
	)
}

func strategyEpoch(t *testing.T, h *refHist, m model.Model) *model.Epoch {
	t.Helper()
	mh := h.toModel(t)
	pts := mh.Points(m)
	e := mh.Epoch(m, model.DiscardEither, pts[len(pts)-1])
	if fmt.Sprint(e.Pending, e.Discards, e.Pairs) != "[0 1] [2] [[3 4]]" {
		t.Fatalf("%s epoch: pending %v discards %v pairs %v, want [0 1] [2] [[3 4]]", m, e.Pending, e.Discards, e.Pairs)
	}
	return e
}

func strategyIDs(t *testing.T, h *refHist, e *model.Epoch, opt model.EnumOptions) ([]string, bool) {
	t.Helper()
	sts, _, trunc := implStates(t, h, e, opt)
	var ids []string
	for _, st := range sts {
		ids = append(ids, e.ID(st))
	}
	return ids, trunc
}

func distinct(ids []string) bool {
	s := slices.Clone(ids)
	slices.Sort(s)
	return len(slices.Compact(s)) == len(ids)
}

// drop-k with K=1 yields the base state plus one state per single change: reorder has 4
// changes (drop op0, op1; keep the discarded range; flip the pair), torn adds op1's two
// sequential tears. K=2 adds every pair of changes on distinct choices.
func TestStrategy_DropK(t *testing.T) {
	h := strategyHist()
	for _, c := range []struct {
		m    model.Model
		k    int
		want int
	}{
		{model.Reorder, 1, 1 + 4},
		{model.Torn, 1, 1 + 6},
		{model.Reorder, 2, 1 + 4 + 6},     // C(4,2)
		{model.Torn, 2, 1 + 6 + (15 - 3)}, // C(6,2) minus the 3 pairs within op1's choice
	} {
		e := strategyEpoch(t, h, c.m)
		ids, trunc := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.DropK, K: c.k})
		if len(ids) != c.want || trunc || !distinct(ids) {
			t.Errorf("%s drop-%d: %d states (truncated %v, distinct %v), want %d distinct:\n%s", c.m, c.k, len(ids), trunc, distinct(ids), c.want, strings.Join(ids, "\n"))
		}
		if ids[0] != fmt.Sprintf("%s:%d", c.m, e.Point.Index) {
			t.Errorf("%s drop-%d: first state %s, want the everything-landed state", c.m, c.k, ids[0])
		}
		for _, id := range ids {
			_, st, err := h.toModel(t).Resolve(id)
			if err != nil {
				t.Fatal(err)
			}
			changes := len(st.Dropped) + len(st.Torn) + len(st.KeepDiscards) + len(st.Flips)
			if changes > c.k {
				t.Errorf("%s drop-%d: state %s makes %d changes", c.m, c.k, id, changes)
			}
		}
	}
}

// keep-k: nothing possibly-persisted landed, then up to k of them landed, and for each landed
// set up to k further changes among what landed (tears, discard choices, flips), as drop-k
// varies them: keep-k must be able to find a bug that needs a discard choice or a flipped order.
func TestStrategy_KeepK(t *testing.T) {
	h := strategyHist()
	for _, c := range []struct {
		m    model.Model
		k    int
		want int
	}{
		// landed sets {}, {0}, {1}; each with one of its 2 changes (discard kept, pair flipped)
		{model.Reorder, 1, 3 + 3*2},
		// landed sets {}, {0}, {1}, {0,1}; each with 2 single changes and 1 double
		{model.Reorder, 2, 4 + 4*3},
		// as reorder, but a landed op1 may also be torn 2 ways
		{model.Torn, 1, 3 + 2 + 2 + 4},
		{model.Torn, 2, 4 + 3 + 3 + (4 + 5) + (4 + 5)},
	} {
		e := strategyEpoch(t, h, c.m)
		ids, _ := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.KeepK, K: c.k})
		if len(ids) != c.want || !distinct(ids) {
			t.Errorf("%s keep-%d: %d states, want %d distinct:\n%s", c.m, c.k, len(ids), c.want, strings.Join(ids, "\n"))
		}
		flips, keeps := 0, 0
		for _, id := range ids {
			_, st, err := h.toModel(t).Resolve(id)
			if err != nil {
				t.Fatal(err)
			}
			if landed := len(e.Pending) - len(st.Dropped); landed > c.k {
				t.Errorf("%s keep-%d: state %s lands %d ops", c.m, c.k, id, landed)
			}
			if other := len(st.Torn) + len(st.KeepDiscards) + len(st.Flips); other > c.k {
				t.Errorf("%s keep-%d: state %s makes %d further changes", c.m, c.k, id, other)
			}
			flips += len(st.Flips)
			keeps += len(st.KeepDiscards)
		}
		if flips == 0 || keeps == 0 {
			t.Errorf("%s keep-%d: %d states flip a pair, %d keep a discarded range: keep-k must vary both", c.m, c.k, flips, keeps)
		}
	}
}

// A bounded drop-k run (Max below the number of single changes) spreads its states over the
// whole possibly-persisted set instead of only ever dropping the first ops; the same holds for
// the pairs of drop-2 and for keep-k's landed sets.
func TestStrategy_MaxSpreadsOverAllOps(t *testing.T) {
	var ops []refOp
	for i := 0; i < 40; i++ {
		ops = append(ops, rW(0, i%6, 1, 2*i, 2*i+1))
	}
	h := rHist([]int{6}, ops...)
	mh := h.toModel(t)
	pts := mh.Points(model.Reorder)
	e := mh.Epoch(model.Reorder, model.DiscardEither, pts[len(pts)-1])
	if len(e.Pending) != 40 {
		t.Fatalf("pending %v, want 40 ops", e.Pending)
	}
	for _, c := range []struct {
		opt  model.EnumOptions
		want func(*model.State) []int // the ops a state varies
	}{
		{model.EnumOptions{Strategy: model.DropK, K: 1, Max: 8}, func(st *model.State) []int { return st.Dropped }},
		{model.EnumOptions{Strategy: model.DropK, K: 2, Max: 60}, func(st *model.State) []int { return st.Dropped }},
		{model.EnumOptions{Strategy: model.KeepK, K: 1, Max: 8}, func(st *model.State) []int {
			var kept []int
			for _, i := range e.Pending {
				if !slices.Contains(st.Dropped, i) {
					kept = append(kept, i)
				}
			}
			return kept
		}},
	} {
		sts, _, trunc := implStates(t, h, e, c.opt)
		if len(sts) != c.opt.Max || !trunc {
			t.Errorf("%+v: %d states, truncated %v; want %d, truncated", c.opt, len(sts), trunc, c.opt.Max)
		}
		lo, hi := 1<<30, -1
		for _, st := range sts {
			for _, i := range c.want(st) {
				lo, hi = min(lo, i), max(hi, i)
			}
		}
		if lo > 5 || hi < 34 {
			t.Errorf("%+v: the varied ops span only %d..%d of 0..39: a bounded run must spread over every op", c.opt, lo, hi)
		}
	}
}

// sample: reproducible for a seed, different across seeds, within the exhaustive set, at most Max.
func TestStrategy_SampleSeeded(t *testing.T) {
	ops := []refOp{}
	for i := 0; i < 8; i++ {
		ops = append(ops, rW(0, i%4, 1+i%2, 2*i, 2*i+1))
	}
	h := rHist([]int{6}, ops...)
	mh := h.toModel(t)
	pts := mh.Points(model.Torn)
	e := mh.Epoch(model.Torn, model.DiscardEither, pts[len(pts)-1])
	all := map[string]bool{}
	ids, _ := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Exhaustive})
	for _, id := range ids {
		all[id] = true
	}
	run := func(seed uint64) []string {
		ids, trunc := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Sample, Seed: seed, Max: 20})
		if len(ids) == 0 || len(ids) > 20 || trunc {
			t.Fatalf("seed %d: %d states (truncated %v), want 1..20", seed, len(ids), trunc)
		}
		for _, id := range ids {
			if !all[id] {
				t.Errorf("seed %d: sampled %s not in the exhaustive set", seed, id)
			}
		}
		return ids
	}
	a, b, c := run(1), run(1), run(2)
	if !slices.Equal(a, b) {
		t.Errorf("seed 1 not reproducible:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 1 and 2 sample the same states: %v", a)
	}
	// The default count is 64 when Max is 0.
	ids, _ = strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Sample, Seed: 5})
	if len(ids) != 64 {
		t.Errorf("sample without Max: %d states, want 64", len(ids))
	}
}

// Max cuts the enumeration short and says so; a limit the enumeration does not reach is not
// reported; a yield that stops is not a truncation.
func TestStrategy_MaxTruncation(t *testing.T) {
	h := strategyHist()
	e := strategyEpoch(t, h, model.Reorder)
	full, trunc := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Exhaustive})
	if trunc || len(full) < 4 {
		t.Fatalf("exhaustive: %d states, truncated %v", len(full), trunc)
	}
	ids, trunc := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Exhaustive, Max: 3})
	if len(ids) != 3 || !trunc || ids[0] != full[0] || !distinct(ids) {
		t.Errorf("exhaustive Max=3: %v, truncated %v; want 3 distinct states starting with %s, truncated", ids, trunc, full[0])
	}
	for _, id := range ids {
		if !slices.Contains(full, id) {
			t.Errorf("exhaustive Max=3: %s not in the exhaustive set", id)
		}
	}
	ids, trunc = strategyIDs(t, h, e, model.EnumOptions{Strategy: model.Exhaustive, Max: len(full)})
	if len(ids) != len(full) || trunc {
		t.Errorf("exhaustive Max=%d (exactly all): %d states, truncated %v", len(full), len(ids), trunc)
	}
	ids, trunc = strategyIDs(t, h, e, model.EnumOptions{Strategy: model.DropK, K: 1, Max: 2})
	if len(ids) != 2 || !trunc {
		t.Errorf("drop-1 Max=2: %d states, truncated %v", len(ids), trunc)
	}
	n := 0
	trunc, err := e.States(model.EnumOptions{Strategy: model.Exhaustive}, func(*model.State) bool { n++; return n < 2 })
	if err != nil || trunc || n != 2 {
		t.Errorf("yield stopping after 2: n=%d truncated %v err %v", n, trunc, err)
	}
}

// Exhaustive over a space larger than ExhaustiveLimit does not abort: it caps the crash point at
// the limit, fewest changes first, and reports it truncated. An unknown strategy is a typed error.
func TestStrategy_ExhaustiveCapsHugeSpace(t *testing.T) {
	var ops []refOp
	for i := 0; i < 26; i++ {
		ops = append(ops, rW(0, 0, 1, 2*i, 2*i+1))
	}
	h := rHist([]int{1}, ops...)
	mh := h.toModel(t)
	pts := mh.Points(model.Reorder)
	e := mh.Epoch(model.Reorder, model.DiscardEither, pts[len(pts)-1])
	n, single := 0, map[int]bool{}
	trunc, err := e.States(model.EnumOptions{Strategy: model.Exhaustive}, func(st *model.State) bool {
		if n == 0 && len(st.Dropped) != 0 {
			t.Errorf("first state %s, want everything landed", st)
		}
		if len(st.Dropped) == 1 {
			single[st.Dropped[0]] = true
		}
		n++
		return true
	})
	if err != nil || !trunc || n != model.ExhaustiveLimit || len(single) != 26 {
		t.Errorf("exhaustive over 2^26 states: err %v, truncated %v, %d states (want %d), %d single drops (want 26)", err, trunc, n, model.ExhaustiveLimit, len(single))
	}
	if _, err := e.States(model.EnumOptions{Strategy: "bogus"}, func(*model.State) bool { return true }); !errors.Is(err, model.ErrUnknownStrategy) {
		t.Errorf("unknown strategy: err %v, want ErrUnknownStrategy", err)
	}
}
