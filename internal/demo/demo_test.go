package demo

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/model"
)

func runDemo(t *testing.T, p extent.Profile, bug extent.Bug, m model.Model) *Outcome {
	t.Helper()
	c := DefaultConfig()
	c.Profile, c.Bug = p, bug
	o, err := Run(context.Background(), RunOptions{Config: c, Model: m, Jobs: 1})
	if err != nil {
		t.Fatalf("%s %s %s: %v", p, bug, m, err)
	}
	t.Cleanup(func() { o.Cleanup(false) })
	return o
}

func TestProfiles(t *testing.T) {
	for _, tc := range []struct {
		p    extent.Profile
		m    model.Model
		pass bool
	}{
		{extent.ProfileHardened, model.Prefix, true},
		{extent.ProfileHardened, model.Flush, true},
		{extent.ProfileHardened, model.Reorder, true},
		{extent.ProfileHardened, model.Torn, true},
		{extent.ProfileCrucible, model.Prefix, true},
		{extent.ProfileCrucible, model.Flush, true},
		{extent.ProfileCrucible, model.Reorder, false},
		{extent.ProfileHardened, model.Coalesce, true},
		{extent.ProfileCrucible, model.Coalesce, true},
	} {
		t.Run(tc.p.String()+"/"+tc.m.String(), func(t *testing.T) {
			o := runDemo(t, tc.p, extent.BugNone, tc.m)
			r := o.Report
			t.Logf("points %d states %d distinct %d checked %d bad %d first bad %d (%.2fs)", r.CrashPoints, r.States, r.Distinct, r.Checked, r.BadStates, o.FirstBad, r.Seconds)
			for i, v := range r.Violations {
				if i < 5 {
					t.Logf("  %s [%s] %s: %s", v.StateID, v.LastMark, v.Oracle, v.Detail)
				}
			}
			if got := len(r.Violations) == 0; got != tc.pass {
				t.Errorf("passed = %v, want %v", got, tc.pass)
			}
		})
	}
}

// TestBugsFound: every planted bug is found by exploring, under a model its unbugged profile
// survives (TestProfiles shows those pass).
func TestBugsFound(t *testing.T) {
	for _, tc := range []struct {
		bug extent.Bug
		p   extent.Profile
		m   model.Model
	}{
		{extent.BugP1, extent.ProfileCrucible, model.Coalesce},
		{extent.BugP2, extent.ProfileCrucible, model.Coalesce},
		{extent.BugP2, extent.ProfileHardened, model.Reorder},
		{extent.BugP3, extent.ProfileHardened, model.Reorder},
		{extent.BugP4, extent.ProfileHardened, model.Torn},
		{extent.BugP5, extent.ProfileHardened, model.Reorder},
	} {
		t.Run(tc.bug.String()+"/"+tc.p.String()+"/"+tc.m.String(), func(t *testing.T) {
			o := runDemo(t, tc.p, tc.bug, tc.m)
			r := o.Report
			t.Logf("%s %s %s: %d bad of %d, first after %d states", tc.p, tc.bug, tc.m, r.BadStates, r.Checked, o.FirstBad)
			if len(r.Violations) == 0 {
				t.Errorf("%s not found", tc.bug)
			}
		})
	}
}

// TestMatrix prints every profile × bug × model run (slow: coalesce); POWERCUT_DEMO_MATRIX=1.
func TestMatrix(t *testing.T) {
	if os.Getenv("POWERCUT_DEMO_MATRIX") == "" {
		t.Skip("set POWERCUT_DEMO_MATRIX=1")
	}
	for _, p := range []extent.Profile{extent.ProfileCrucible, extent.ProfileHardened} {
		for _, bug := range append([]extent.Bug{extent.BugNone}, extent.Bugs()...) {
			if !bug.Applies(p) {
				continue
			}
			for _, m := range []model.Model{model.Prefix, model.Flush, model.Reorder, model.Torn, model.Coalesce} {
				o := runDemo(t, p, bug, m)
				_ = o
				r := o.Report
				first := ""
				if len(r.Violations) > 0 {
					first = r.Violations[0].Oracle + ": " + r.Violations[0].Detail
				}
				fmt.Printf("%-8s %-4s %-8s checked %4d bad %4d first %4d %.2fs %s", p, bug, m, r.Checked, r.BadStates, o.FirstBad, r.Seconds, first)
				fmt.Println()
			}
		}
	}
}
