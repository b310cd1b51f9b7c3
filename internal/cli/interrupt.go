package cli

import (
	"context"
	"fmt"

	"github.com/powercut/powercut/explore"
)

// interruptExit turns the end of a run that a signal cancelled (ctx done) into what the user
// is told: "interrupted after N of M states" and the violations found until then, exit 1 when
// there were some (the verdict stands: the states checked are bad), else exit 2 (no verdict).
// ok is false when the run was not interrupted; err is then left to the caller.
func interruptExit(ctx context.Context, env *Env, rep *explore.Report, err error) (error, bool) {
	if ctx.Err() == nil || err == nil {
		return err, false
	}
	if rep == nil {
		return fmt.Errorf("interrupted after 0 of 0 states (before the exploration started)"), true
	}
	msg := fmt.Sprintf("interrupted after %d of %d states (distinct states generated so far, %d crash points)", rep.Checked, rep.Distinct, rep.CrashPoints)
	if len(rep.Violations) == 0 {
		return fmt.Errorf("%s; no violation so far", msg), true
	}
	fmt.Fprintf(env.Stderr, "powercut: %s; %d violations so far:\n", msg, len(rep.Violations))
	for i, v := range rep.Violations {
		if i == 20 {
			fmt.Fprintf(env.Stderr, "  ... and %d more\n", len(rep.Violations)-i)
			break
		}
		fmt.Fprintf(env.Stderr, "  %s: %s: %s\n", v.StateID, v.Oracle, v.Detail)
	}
	return ErrViolations, true
}
