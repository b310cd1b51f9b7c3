package model_test

import (
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
//	op2 DISCARD dev0 [3,+1)  pending; policy either: one more choice
//	op3 WRITE   dev1 [0,+1)  FUA, durable, concurrent with op4
//	op4 WRITE   dev1 [0,+1)  FUA, durable: the pair (3,4) has a free order
func strategyHist() *refHist {
	return rHist([]int{4, 1},
		rW(0, 0, 1, 0, 1),
		rW(0, 1, 2, 2, 3),
		rDiscard(0, 3, 1, 4, 5),
		rFUA(rW(1, 0, 1, 6, 8)),
		rFUA(rW(1, 0, 1, 7, 9)),
	)
}

func strategyEpoch(t *testing.T, h *refHist, m model.Model) *model.Epoch {
	t.Helper()
	mh := h.toModel(t)
	pts := mh.Points(m)
	e := mh.Epoch(m, model.DiscardEither, pts[len(pts)-1])
	if fmt.Sprint(e.Pending, e.Discards, e.Pairs) != "[0 1 2] [2] [[3 4]]" {
		t.Fatalf("%s epoch: pending %v discards %v pairs %v, want [0 1 2] [2] [[3 4]]", m, e.Pending, e.Discards, e.Pairs)
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

// drop-k with K=1 yields the base state plus one state per single change: reorder has 5
// changes (drop op0, op1, op2; keep the discard; flip the pair), torn adds op1's two
// sequential tears. K=2 adds every pair of changes on distinct choices.
func TestStrategy_DropK(t *testing.T) {
	h := strategyHist()
	for _, c := range []struct {
		m    model.Model
		k    int
		want int
	}{
		{model.Reorder, 1, 1 + 5},
		{model.Torn, 1, 1 + 7},
		{model.Reorder, 2, 1 + 5 + 10},    // C(5,2)
		{model.Torn, 2, 1 + 7 + (21 - 3)}, // C(7,2) minus the 3 pairs within op1's choice
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

// keep-k: nothing possibly-persisted landed, plus up to k of them landed (whole or, torn, torn).
func TestStrategy_KeepK(t *testing.T) {
	h := strategyHist()
	for _, c := range []struct {
		m    model.Model
		k    int
		want int
	}{
		{model.Reorder, 1, 1 + 3},
		{model.Reorder, 2, 1 + 3 + 3},
		{model.Torn, 1, 1 + 5},                     // op1: whole or 2 tears
		{model.Torn, 2, 1 + 5 + (1*3 + 1*1 + 3*1)}, // pairs of distinct ops
	} {
		e := strategyEpoch(t, h, c.m)
		ids, _ := strategyIDs(t, h, e, model.EnumOptions{Strategy: model.KeepK, K: c.k})
		if len(ids) != c.want || !distinct(ids) {
			t.Errorf("%s keep-%d: %d states, want %d distinct:\n%s", c.m, c.k, len(ids), c.want, strings.Join(ids, "\n"))
		}
		for _, id := range ids {
			_, st, err := h.toModel(t).Resolve(id)
			if err != nil {
				t.Fatal(err)
			}
			if landed := len(e.Pending) - len(st.Dropped); landed > c.k {
				t.Errorf("%s keep-%d: state %s lands %d ops", c.m, c.k, id, landed)
			}
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
	if len(ids) != 3 || !trunc || !slices.Equal(ids, full[:3]) {
		t.Errorf("exhaustive Max=3: %d states, truncated %v; want the first 3 of %d, truncated", len(ids), trunc, len(full))
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

// Exhaustive refuses an enumeration too large to walk, naming the alternatives.
func TestStrategy_ExhaustiveRefusesHugeSpace(t *testing.T) {
	var ops []refOp
	for i := 0; i < 26; i++ {
		ops = append(ops, rW(0, 0, 1, 2*i, 2*i+1))
	}
	h := rHist([]int{1}, ops...)
	mh := h.toModel(t)
	pts := mh.Points(model.Reorder)
	e := mh.Epoch(model.Reorder, model.DiscardEither, pts[len(pts)-1])
	_, err := e.States(model.EnumOptions{Strategy: model.Exhaustive}, func(*model.State) bool { return true })
	if err == nil || !strings.Contains(err.Error(), "drop-k") {
		t.Errorf("exhaustive over 2^26 states: err %v, want a refusal naming drop-k", err)
	}
	if _, err := e.States(model.EnumOptions{Strategy: "bogus"}, func(*model.State) bool { return true }); err == nil {
		t.Errorf("unknown strategy accepted")
	}
}
