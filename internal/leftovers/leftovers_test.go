package leftovers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deadPID returns the PID of a process that has exited (and been reaped).
func deadPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

// ownerDir makes TMPDIR/powercut-<pid>-<suffix> with a lock file holding content, and a file
// inside a subdirectory (what a run keeps there).
func ownerDir(t *testing.T, tmp string, pid int, suffix, content string) string {
	t.Helper()
	d := filepath.Join(tmp, fmt.Sprintf("powercut-%d-%s", pid, suffix))
	if err := os.MkdirAll(filepath.Join(d, "powercut-fs-mnt-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, LockName), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "powercut-fs-mnt-1", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSweepOnlyDeadOwners: a directory whose owner died is removed (and a dry run only lists
// it); one whose owner holds its lock is never touched, even when the PID in its name is reused
// by a live process; what does not carry powercut's name is never touched.
func TestSweepOnlyDeadOwners(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	dead := ownerDir(t, tmp, deadPID(t), "1", "12345\n")
	// A live owner: a child process holding the lock (flock(1) keeps it while sleep runs).
	livePID := os.Getpid() // any live PID; the lock is what says the owner lives
	live := ownerDir(t, tmp, livePID+1_000_000, "2", "")
	holder := exec.Command("flock", "-x", filepath.Join(live, LockName), "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Skipf("flock(1) unavailable: %v", err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	// Wait until flock holds the lock.
	for i := 0; i < 100; i++ {
		f, ok := deadOwner(live, livePID+1_000_000)
		if !ok {
			break
		}
		f.Close()
		time.Sleep(20 * time.Millisecond)
	}
	// A PID reused by a live process with another start time: dead owner all the same, since
	// nobody holds the lock.
	reused := ownerDir(t, tmp, holder.Process.Pid, "3", "1\n")
	other := filepath.Join(tmp, "powercut-notmine")
	os.Mkdir(other, 0o755)
	foreign := filepath.Join(tmp, "somebody-else-123-x")
	os.Mkdir(foreign, 0o755)

	acts, err := Sweep(true)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, a := range acts {
		listed[a.Path] = true
		if a.Kind != "dir" {
			t.Errorf("dry run listed %s, want only directories here", a)
		}
	}
	if !listed[dead] || !listed[reused] || listed[live] || listed[other] || listed[foreign] {
		t.Fatalf("dry run listed %v; want %s and %s only", acts, dead, reused)
	}
	for _, d := range []string{dead, reused} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("dry run removed %s", d)
		}
	}

	acts, err = Sweep(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Err != "" {
			t.Errorf("%s", a)
		}
		if !strings.Contains(a.String(), "left by dead powercut") {
			t.Errorf("action %q does not name the dead owner", a)
		}
	}
	for _, d := range []string{dead, reused} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there after the sweep", d)
		}
	}
	for _, d := range []string{live, other, foreign} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("the sweep removed %s, which it must not touch: %v", d, err)
		}
	}
}

// TestOwnDirLockedAndClosed: this process's own directory is locked while it lives (a sweep by
// anybody skips it) and removed by Close.
func TestOwnDirLockedAndClosed(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	d, err := MkdirTemp("powercut-scratch-")
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Dir(d)
	if !strings.HasPrefix(filepath.Base(own), fmt.Sprintf("powercut-%d-", os.Getpid())) {
		t.Fatalf("own directory %s does not carry this PID", own)
	}
	// Another process's view: flock(1) on the lock must fail while this process lives.
	if out, err := exec.Command("flock", "-n", "-x", filepath.Join(own, LockName), "true").CombinedOutput(); err == nil {
		t.Errorf("the owner lock is not held: flock -n succeeded (%s)", out)
	}
	acts, err := Sweep(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 0 {
		t.Errorf("sweep touched a live directory: %v", acts)
	}
	if got := Close(); len(got) != 0 {
		t.Errorf("Close reported leftovers after correct releases: %v", got)
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("own directory still there after Close: %v", err)
	}
}

func TestUnescape(t *testing.T) {
	if got := UnescapeMountinfo(`/tmp/a\040b\011c`); got != "/tmp/a b\tc" {
		t.Errorf("unescape = %q", got)
	}
}
