package demo

import (
	"testing"

	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/model"
)

// Every planted bug's first violation of each group minimises to at most two deviations from
// "everything landed", with a sentence naming the operations, and the minimal state reproduces.
func TestBugsMinimised(t *testing.T) {
	for _, tc := range []struct {
		bug extent.Bug
		p   extent.Profile
		m   model.Model
	}{
		{extent.BugP1, extent.ProfileCrucible, model.Coalesce},
		{extent.BugP2, extent.ProfileHardened, model.Reorder},
		{extent.BugP3, extent.ProfileHardened, model.Reorder},
		{extent.BugP4, extent.ProfileHardened, model.Torn},
		{extent.BugP5, extent.ProfileHardened, model.Reorder},
	} {
		t.Run(tc.bug.String(), func(t *testing.T) {
			r := runDemo(t, tc.p, tc.bug, tc.m)
			if len(r.Groups) == 0 {
				t.Fatalf("%s: %d violations, no group", tc.bug, len(r.Violations))
			}
			for _, g := range r.Groups {
				mn := g.Minimal
				if mn == nil {
					t.Fatalf("group %s/%q: not minimised (the demo's checker is cheap)", g.Oracle, g.Class)
				}
				t.Logf("%s: group %s (%d violations in %d states): %s -> %s in %d checks: %s",
					tc.bug, g.Oracle, g.Violations, g.States, mn.From, mn.StateID, mn.Checks, mn.Explanation)
				if len(mn.Deviations) > 2 || !mn.Complete {
					t.Errorf("%s: minimal set of %s has %d deviations (complete %v), want at most 2", tc.bug, mn.From, len(mn.Deviations), mn.Complete)
				}
				if mn.Explanation == "" || mn.Violation.Oracle != g.Oracle {
					t.Errorf("%s: minimal %+v", tc.bug, mn)
				}
			}
		})
	}
}
