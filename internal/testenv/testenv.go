// Package testenv holds the skip conditions shared by tests that need root, FUSE, loop devices or
// external tools: such tests skip with a clear message where those are missing and run where they
// exist (they exist in CI).
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireRoot skips the test unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (run the suite as root, as CI does)")
	}
}

// RequireTool skips the test unless every named program is on PATH.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("skipping: %s not installed (.ci/run installs it)", n)
		}
	}
}

// RequireFUSE skips the test unless /dev/fuse and fusermount3 (or root) are available.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("skipping: /dev/fuse missing (no FUSE on this machine)")
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err := exec.LookPath("fusermount"); err != nil {
				t.Skip("skipping: FUSE needs root or fusermount3")
			}
		}
	}
}

// RequireLoop skips the test unless loop devices can be set up (root and /dev/loop-control).
func RequireLoop(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("skipping: /dev/loop-control missing (no loop devices)")
	}
	RequireTool(t, "losetup")
}

// Fixture returns the path of a file of the real-kernel fixtures: $POWERCUT_FIXTURES/rel, or
// ../shared/fixtures/rel beside the module (where CI and the developers' checkouts have them).
// It skips the test, naming the path it looked at, when they are absent.
func Fixture(t testing.TB, rel string) string {
	t.Helper()
	dir := os.Getenv("POWERCUT_FIXTURES")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "..", "shared", "fixtures")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatal("go.mod not found above the test's directory")
			}
		}
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("skipping: needs the real-kernel fixture %s (%v): the fixtures live in ../shared/fixtures beside the checkout (CI has them), or set POWERCUT_FIXTURES", p, err)
	}
	return p
}
