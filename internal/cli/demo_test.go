package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"demo"}, ExitOK, "No violation"},
		{[]string{"demo", "--bug", "P5"}, ExitViolations, "powercut replay --log"},
		{[]string{"demo", "--profile", "crucible", "--model", "flush"}, ExitOK, "No violation"},
		{[]string{"demo", "--profile", "crucible", "--bug", "P3"}, ExitError, "hardened-only"},
		{[]string{"demo", "--bug", "P9"}, ExitError, "unknown bug"},
		{[]string{"demo", "--json", "--bug", "P4", "--model", "torn"}, ExitViolations, `"oracle"`},
		{[]string{"demo", "--to-mark", "no-such-mark"}, ExitError, `mark "no-such-mark" not in the log`},
	} {
		var out, errb bytes.Buffer
		// Runs with violations keep their recording: keep it in the test's directory.
		args := append(tc.args, "--keep-log", filepath.Join(t.TempDir(), "demo.pclog"))
		code := Run(context.Background(), args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("%v: exit %d (want %d), output lacks %q:\n%s\n%s", tc.args, code, tc.code, tc.want, out.String(), errb.String())
		}
	}
}
