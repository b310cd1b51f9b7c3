package explore

import (
	"errors"
	"fmt"
	"sort"
)

// ErrShards: the reports given to Merge are not exactly the shards of one exploration.
var ErrShards = errors.New("bad set of shards")

// Merge combines the reports of the shards of one exploration (Options.Shard 0..N-1, same
// recording and options) into the report the unsharded run gives: the same counts, violations in
// the same order, the same groups with the same minimal states. A missing, duplicated or foreign
// shard is an error naming it. Seconds is the longest shard's.
func Merge(shards []*Report) (*Report, error) {
	if len(shards) == 1 && (shards[0].Shard == nil || shards[0].Shard.Count <= 1) {
		return shards[0], nil
	}
	byIndex, err := orderShards(shards)
	if err != nil {
		return nil, err
	}
	f := byIndex[0]
	out := &Report{Model: f.Model, Strategy: f.Strategy, CrashPoints: f.CrashPoints, States: f.States, Distinct: f.Distinct,
		Truncated: f.Truncated, Violations: []Found{}, Groups: []Group{}}
	type groupFirst struct {
		g     Group
		shard int
	}
	firsts := map[string][]groupFirst{}
	for i, r := range byIndex {
		out.Checked += r.Checked
		out.BadStates += r.BadStates
		out.StoppedEarly = out.StoppedEarly || r.StoppedEarly
		out.Seconds = max(out.Seconds, r.Seconds)
		if r.FirstBad > 0 && (out.FirstBad == 0 || r.FirstBad < out.FirstBad) {
			out.FirstBad = r.FirstBad
		}
		out.Violations = append(out.Violations, r.Violations...)
		for _, g := range r.Groups {
			k := groupKeyOf(g.First)
			firsts[k] = append(firsts[k], groupFirst{g, i})
		}
	}
	sort.SliceStable(out.Violations, func(a, b int) bool { return out.Violations[a].Seq < out.Violations[b].Seq })
	// Groups in the order of their first violation, each with the minimisation made by the
	// shard that owned that first violation.
	idx := map[string]int{}
	for _, v := range out.Violations {
		k := groupKeyOf(v)
		if gi, ok := idx[k]; ok {
			out.Groups[gi].Violations++
			continue
		}
		g := Group{Oracle: v.Oracle, Class: v.Class(), Violations: 1, First: v}
		for _, c := range firsts[k] {
			if c.g.First.Seq == v.Seq && c.g.First.StateID == v.StateID {
				g.Minimal = c.g.Minimal
			}
		}
		idx[k] = len(out.Groups)
		out.Groups = append(out.Groups, g)
	}
	states := map[string]map[string]bool{}
	for _, v := range out.Violations {
		k := groupKeyOf(v)
		if states[k] == nil {
			states[k] = map[string]bool{}
		}
		states[k][v.StateID] = true
	}
	for k, gi := range idx {
		out.Groups[gi].States = len(states[k])
	}
	return out, nil
}

func groupKeyOf(f Found) string {
	k := f.Oracle + "\x00" + f.Class()
	if f.Cause != "" {
		k += "\x00" + f.Cause
	}
	return k
}

// orderShards checks that shards are exactly the shares 0..N-1 of one exploration and returns
// them by index.
func orderShards(shards []*Report) ([]*Report, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no report", ErrShards)
	}
	n := 0
	if s := shards[0].Shard; s != nil {
		n = s.Count
	}
	if n <= 1 {
		return nil, fmt.Errorf("%w: %d reports, but the first is not a shard of a sharded run", ErrShards, len(shards))
	}
	byIndex := make([]*Report, n)
	first := shards[0]
	for k, r := range shards {
		if r.Shard == nil || r.Shard.Count != n {
			return nil, fmt.Errorf("%w: report %d is not a shard of a %d-way run", ErrShards, k+1, n)
		}
		i := r.Shard.Index
		if i < 0 || i >= n {
			return nil, fmt.Errorf("%w: report %d claims shard %d of %d", ErrShards, k+1, i, n)
		}
		if byIndex[i] != nil {
			return nil, fmt.Errorf("%w: shard %d/%d given twice", ErrShards, i, n)
		}
		if r.Model != first.Model || r.Strategy != first.Strategy || r.CrashPoints != first.CrashPoints || r.States != first.States ||
			r.Distinct != first.Distinct || r.Truncated != first.Truncated {
			return nil, fmt.Errorf("%w: shard %d/%d explored something else (model %s, strategy %s, %d crash points, %d states, %d distinct) than shard %d/%d (model %s, strategy %s, %d, %d, %d)",
				ErrShards, i, n, r.Model, r.Strategy, r.CrashPoints, r.States, r.Distinct, first.Shard.Index, n, first.Model, first.Strategy, first.CrashPoints, first.States, first.Distinct)
		}
		byIndex[i] = r
	}
	var missing []int
	for i, r := range byIndex {
		if r == nil {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: shard(s) %v of %d missing", ErrShards, missing, n)
	}
	return byIndex, nil
}
