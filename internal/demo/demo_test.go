package demo

import (
	"strings"
	"testing"

	"github.com/powercut/powercut/crashtest"
	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/model"
)

// crashTest is the demo as a crash test: the seeded workload on its extent, the demo's oracles
// on every crash image, the exploration `powercut demo` runs (every state of drop-k, every
// violation).
func crashTest(t *testing.T, c Config, m model.Model) crashtest.Test {
	t.Helper()
	dev, err := c.Device()
	if err != nil {
		t.Fatal(err)
	}
	var x *Expect
	return crashtest.Test{
		Devices: []crashtest.Device{{Name: dev.Name, Size: dev.Size, SectorSize: dev.SectorSize}},
		Models:  []model.Model{m},
		Jobs:    1,
		Workload: func(w *crashtest.Workload) error {
			res, err := Drive(w.Recorder(), c)
			if err == nil {
				x = res.Expect
			}
			return err
		},
		Check: func(cr *crashtest.Crash) error {
			vs, err := x.Check(cr.Image(DeviceID), dev.Size, cr.LastMark)
			if err != nil {
				return crashtest.CannotCheck(err)
			}
			for _, v := range vs {
				ev := v.Explore()
				cr.Violation(ev.Oracle, ev.Detail)
			}
			return nil
		},
		Options: func(o *explore.Options) { o.States, o.MaxViolations = 0, 0 },
	}
}

// runDemo explores the demo's workload under m; the tests judge the report (some expect
// violations, so they go through Explore rather than Run).
func runDemo(t *testing.T, p extent.Profile, bug extent.Bug, m model.Model) *explore.Report {
	t.Helper()
	c := DefaultConfig()
	c.Profile, c.Bug = p, bug
	res, err := crashTest(t, c, m).Explore(t.Context(), t.TempDir())
	if err != nil {
		t.Fatalf("%s %s %s: %v", p, bug, m, err)
	}
	return res.Reports[0]
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
			r := runDemo(t, tc.p, extent.BugNone, tc.m)
			t.Logf("points %d states %d distinct %d checked %d bad %d first bad %d (%.2fs)", r.CrashPoints, r.States, r.Distinct, r.Checked, r.BadStates, r.FirstBad, r.Seconds)
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
			r := runDemo(t, tc.p, tc.bug, tc.m)
			t.Logf("%s %s %s: %d bad of %d, first after %d states", tc.p, tc.bug, tc.m, r.BadStates, r.Checked, r.FirstBad)
			if len(r.Violations) == 0 {
				t.Errorf("%s not found", tc.bug)
			}
		})
	}
}

// TestMatrix runs every profile × bug × model and checks which combinations find violations:
// the README's table, pinned. A profile without a bug fails only where the protocol is known
// to rely on ordering (crucible under reorder/torn).
func TestMatrix(t *testing.T) {
	found := map[string]string{ // profile/bug -> models that find violations
		"crucible/none": "reorder torn",
		"crucible/P1":   "reorder torn coalesce",
		"crucible/P2":   "reorder torn coalesce",
		"crucible/P5":   "reorder torn coalesce",
		"hardened/none": "",
		"hardened/P1":   "",
		"hardened/P2":   "reorder torn",
		"hardened/P3":   "reorder torn",
		"hardened/P4":   "torn",
		"hardened/P5":   "reorder torn coalesce",
	}
	for _, p := range []extent.Profile{extent.ProfileCrucible, extent.ProfileHardened} {
		for _, bug := range append([]extent.Bug{extent.BugNone}, extent.Bugs()...) {
			if !bug.Applies(p) {
				continue
			}
			key := p.String() + "/" + bug.String()
			var got []string
			for _, m := range []model.Model{model.Prefix, model.Flush, model.Reorder, model.Torn, model.Coalesce} {
				r := runDemo(t, p, bug, m)
				first := ""
				if len(r.Violations) > 0 {
					got = append(got, m.String())
					first = r.Violations[0].Oracle + ": " + r.Violations[0].Detail
				}
				t.Logf("%-8s %-4s %-8s checked %4d bad %4d first %4d %s", p, bug, m, r.Checked, r.BadStates, r.FirstBad, first)
			}
			want, ok := found[key]
			if !ok {
				t.Errorf("%s: no expectation", key)
				continue
			}
			if g := strings.Join(got, " "); g != want {
				t.Errorf("%s: violations found under [%s], want [%s]", key, g, want)
			}
		}
	}
}
