package explore_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/demo"
	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// demoSource records the demo with planted bug P3 (many violations in several groups) and
// returns its recording and the demo's checker.
func demoSource(t *testing.T) (explore.Source, explore.Checker) {
	t.Helper()
	c := demo.DefaultConfig()
	c.Profile, c.Bug = extent.ProfileHardened, extent.BugP3
	o, err := demo.Run(context.Background(), demo.RunOptions{Config: c, Model: model.Reorder, Jobs: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Cleanup(false) })
	l, err := pclog.Open(o.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return explore.Source{Log: l}, &demo.Checker{X: o.Recording.Expect}
}

// comparable drops what legitimately differs between runs (time, the shard label).
func comparable(t *testing.T, r *explore.Report) string {
	t.Helper()
	c := *r
	c.Seconds, c.Shard = 0, nil
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// counting wraps a checker and counts its runs.
type counting struct {
	explore.Checker
	n      atomic.Int64
	cancel func()
	after  int64
}

func (c *counting) Check(ctx context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	if c.n.Add(1) == c.after && c.cancel != nil {
		c.cancel()
	}
	return c.Checker.Check(ctx, cand)
}
func (c *counting) Reads() explore.Reads { return explore.ReadsOf(c.Checker) }
func (c *counting) Cheap() bool          { return true }

// Shards check disjoint shares of the distinct states (no state twice, none lost) and merge into
// exactly the unsharded report: counts, violations in order, groups with their minimal states.
func TestShardsMergeToTheUnshardedReport(t *testing.T) {
	src, chk := demoSource(t)
	opts := explore.Options{Model: model.Reorder, Jobs: 2}
	whole := &counting{Checker: chk}
	want, err := explore.Explore(context.Background(), src, opts, whole, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Violations) == 0 || len(want.Groups) < 2 {
		t.Fatalf("the unsharded run found %d violations in %d groups: want several", len(want.Violations), len(want.Groups))
	}
	for _, n := range []int{2, 3} {
		var reps []*explore.Report
		var checks int64
		for i := 0; i < n; i++ {
			o := opts
			o.Shard = explore.Shard{Index: i, Count: n}
			c := &counting{Checker: chk}
			r, err := explore.Explore(context.Background(), src, o, c, nil)
			if err != nil {
				t.Fatal(err)
			}
			checks += int64(r.Checked)
			reps = append(reps, r)
		}
		if checks != int64(want.Checked) {
			t.Errorf("%d shards checked %d states in all, the unsharded run %d", n, checks, want.Checked)
		}
		got, err := explore.Merge([]*explore.Report{reps[n-1], reps[0]}) // order given does not matter...
		if n == 2 {
			if err != nil {
				t.Fatal(err)
			}
			if comparable(t, got) != comparable(t, want) {
				t.Errorf("merged 2 shards:\n%s\nunsharded:\n%s", comparable(t, got), comparable(t, want))
			}
			continue
		}
		if !errors.Is(err, explore.ErrShards) { // ... but a missing shard is an error
			t.Errorf("merging 2 of 3 shards: err %v, want ErrShards", err)
		}
		if _, err := explore.Merge(append(reps, reps[1])); !errors.Is(err, explore.ErrShards) {
			t.Errorf("merging a duplicated shard: err %v, want ErrShards", err)
		}
		got, err = explore.Merge(reps)
		if err != nil {
			t.Fatal(err)
		}
		if comparable(t, got) != comparable(t, want) {
			t.Errorf("merged 3 shards differ from the unsharded run")
		}
	}
}

// An interrupted run resumed from its journal re-checks nothing it recorded, loses nothing,
// and ends with the report of an uninterrupted run.
func TestResumeAfterInterruption(t *testing.T) {
	src, chk := demoSource(t)
	opts := explore.Options{Model: model.Reorder}
	want, err := explore.Explore(context.Background(), src, opts, chk, nil)
	if err != nil {
		t.Fatal(err)
	}
	journal := map[int]explore.Checked{}
	ctx, cancel := context.WithCancel(context.Background())
	first := &counting{Checker: chk, cancel: cancel, after: int64(want.Checked / 2)}
	o := opts
	o.OnChecked = func(c explore.Checked) error { journal[c.Seq] = c; return nil }
	if _, err := explore.Explore(ctx, src, o, first, nil); err == nil {
		t.Fatal("the interrupted run did not report its interruption")
	}
	if len(journal) == 0 || len(journal) >= want.Checked {
		t.Fatalf("journal holds %d of %d results", len(journal), want.Checked)
	}
	second := &counting{Checker: chk}
	o = opts
	o.Resume = journal
	got, err := explore.Explore(context.Background(), src, o, second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if int(second.n.Load())-minimiseChecks(got) != want.Checked-len(journal) {
		t.Errorf("resumed run checked %d states (minus minimisation), want %d (the %d not journaled)", int(second.n.Load())-minimiseChecks(got), want.Checked-len(journal), want.Checked-len(journal))
	}
	if comparable(t, got) != comparable(t, want) {
		t.Errorf("resumed report differs from the uninterrupted one")
	}
	// A journal from another exploration is refused.
	o.Resume = map[int]explore.Checked{0: {Seq: 0, StateID: "reorder:999"}}
	if _, err := explore.Explore(context.Background(), src, o, chk, nil); !errors.Is(err, explore.ErrResumeMismatch) {
		t.Errorf("foreign journal: err %v, want ErrResumeMismatch", err)
	}
}

func minimiseChecks(r *explore.Report) int {
	n := 0
	for _, g := range r.Groups {
		if g.Minimal != nil {
			n += g.Minimal.Checks
		}
	}
	return n
}
