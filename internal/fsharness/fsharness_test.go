package fsharness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/cli"
	"github.com/powercut/powercut/internal/fsharness"
	"github.com/powercut/powercut/internal/testenv"
)

// TestMain lets the test binary stand in for the powercut binary: the harness puts a link named
// "powercut" to os.Executable() on the workload's PATH, so `powercut mark` in the workload runs
// this binary under that name, and it must behave as the CLI.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "powercut" {
		os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

var (
	workload = mustAbs("../../testdata/fs/workload.sh")
	check    = mustAbs("../../testdata/fs/check.sh")
)

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

func require(t *testing.T, fs string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	testenv.RequireLoop(t)
	testenv.RequireTool(t, fsharness.Tools(fs)...)
	if testing.Short() {
		t.Skip("skipping: kernel file system crash exploration in -short mode")
	}
}

type fsRun struct {
	code   int
	stdout string
	stderr string
	report map[string]any
}

// runFS runs `powercut fs` in-process and asserts nothing was left behind.
func runFS(t *testing.T, ctx context.Context, args ...string) fsRun {
	t.Helper()
	out := t.TempDir()
	var so, se bytes.Buffer
	before := takeSnapshot()
	args = append([]string{"fs", "--out", out, "--workload", workload}, args...)
	code := cli.Run(ctx, args, &so, &se)
	r := fsRun{code: code, stdout: so.String(), stderr: se.String()}
	if b, err := os.ReadFile(filepath.Join(out, fsharness.ReportName)); err == nil {
		_ = json.Unmarshal(b, &r.report)
	}
	t.Logf("powercut %s -> exit %d\n%s", strings.Join(args, " "), code, lastLines(r.stdout, 12))
	assertClean(t, before)
	return r
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// snapshot is the machine's loop devices and mounts before a run: other contributors' tests may
// run at the same time, so only what a run added (and what is recognisably ours) counts.
type snapshot struct{ loops, mounts map[string]bool }

func takeSnapshot() snapshot {
	s := snapshot{loops: map[string]bool{}, mounts: map[string]bool{}}
	if out, err := exec.Command("losetup", "-a").CombinedOutput(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			s.loops[l] = true
		}
	}
	b, _ := os.ReadFile("/proc/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		s.mounts[l] = true
	}
	return s
}

// assertClean fails the test if a loop device, mount, FUSE mount or process of this run survived:
// no /dev/fuse descriptor may stay open in this process (the recorder's and the scratch
// directory's FUSE servers run here), and no loop device or mount of powercut may have appeared.
func assertClean(t *testing.T, before snapshot) {
	t.Helper()
	after := takeSnapshot()
	for l := range after.loops {
		// Only the harness's own backing files: the recorder's disk under powercut-fs-* and crash
		// states under powercut-scratch-* (other packages' tests attach loops to other paths).
		if !before.loops[l] && (strings.Contains(l, "/powercut-fs-") || strings.Contains(l, "/powercut-scratch-")) {
			t.Errorf("loop device left behind: %s", l)
		}
	}
	for l := range after.mounts {
		// Mounts of the harness itself; the FUSE mounts (recorder, scratch) are covered by the
		// /dev/fuse check below, which cannot confuse them with a concurrent test's.
		if !before.mounts[l] && strings.Contains(l, "powercut-fs-") {
			t.Errorf("mount left behind: %s", l)
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == "/dev/fuse" {
			t.Errorf("FUSE connection still open in this process (fd %s)", fd.Name())
		}
	}
	if ps := procsMatching("98765"); len(ps) > 0 {
		t.Errorf("processes left behind: %v", ps)
	}
}

// procsMatching lists processes whose command line contains s (the hanging checks sleep for a
// recognisable number of seconds).
func procsMatching(s string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, s) && !strings.Contains(cmd, "go test") {
			found = append(found, e.Name()+": "+cmd)
		}
	}
	return found
}

func num(r fsRun, key string) int {
	v, _ := r.report[key].(float64)
	return int(v)
}

func wantNoViolation(t *testing.T, r fsRun) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, lastLines(r.stderr, 30))
	}
	if num(r, "checked") == 0 {
		t.Fatalf("no state checked: %v", r.report)
	}
	t.Logf("crash points %d, states %d, distinct %d, checked %d", num(r, "crash_points"), num(r, "states"), num(r, "distinct_images"), num(r, "checked"))
}

func TestExt4Flush(t *testing.T) {
	require(t, "ext4")
	wantNoViolation(t, runFS(t, context.Background(), "--fs", "ext4", "--check", check, "--model", "flush", "--jobs", "2"))
}

func TestExt4ReorderDropK(t *testing.T) {
	require(t, "ext4")
	r := runFS(t, context.Background(), "--fs", "ext4", "--check", check, "--model", "reorder", "--strategy", "drop-k", "--jobs", "2")
	wantNoViolation(t, r)
	// Identical images (with the same mark context, which the check script sees) are mounted and
	// checked once: the report counts them.
	if states, distinct, checked := num(r, "states"), num(r, "distinct_images"), num(r, "checked"); checked != distinct || distinct >= states {
		t.Errorf("states %d, distinct images %d, checked %d: want checked == distinct < states", states, distinct, checked)
	}
}

// Without a check script the verdict depends on the image alone: identical images are checked
// once whatever their marks.
func TestExt4DedupWithoutCheck(t *testing.T) {
	require(t, "ext4")
	r := runFS(t, context.Background(), "--fs", "ext4", "--model", "flush")
	wantNoViolation(t, r)
	if states, distinct, checked := num(r, "states"), num(r, "distinct_images"), num(r, "checked"); checked != distinct || distinct >= states {
		t.Errorf("states %d, distinct images %d, checked %d: want checked == distinct < states", states, distinct, checked)
	}
}

// TestExt4Nobarrier proves the harness sees a real misconfiguration: without barriers the
// journal is not ordered by flushes, so a state after fsync-N can lack file N.
func TestExt4Nobarrier(t *testing.T) {
	require(t, "ext4")
	r := runFS(t, context.Background(), "--fs", "ext4", "--mount-opts", "nobarrier", "--check", check, "--model", "reorder", "--strategy", "drop-k", "--k", "1", "--states", "2", "--jobs", "2")
	if r.code != cli.ExitViolations {
		t.Fatalf("exit %d, want %d (violations)\n%s\n%s", r.code, cli.ExitViolations, r.stdout, lastLines(r.stderr, 30))
	}
	if !strings.Contains(r.stdout, "although fsync-") || !strings.Contains(r.stdout, "powercut replay --log") {
		t.Fatalf("violation report lacks the check's finding or the rebuild command:\n%s", r.stdout)
	}
}

func TestXFS(t *testing.T) {
	require(t, "xfs")
	wantNoViolation(t, runFS(t, context.Background(), "--fs", "xfs", "--size", "300M", "--check", check, "--model", "reorder", "--jobs", "2"))
}

func TestBtrfs(t *testing.T) {
	require(t, "btrfs")
	wantNoViolation(t, runFS(t, context.Background(), "--fs", "btrfs", "--check", check, "--model", "reorder"))
}

// TestCheckTimeout: a check that hangs is killed by --check-timeout, the state is a violation,
// and the run completes with nothing left behind.
func TestCheckTimeout(t *testing.T) {
	require(t, "ext4")
	r := runFS(t, context.Background(), "--fs", "ext4", "--check", "sleep 987651", "--check-timeout", "1s", "--model", "flush", "--to-mark", "fsync-1")
	if r.code != cli.ExitViolations || !strings.Contains(r.stdout, "timed out") {
		t.Fatalf("exit %d, want violations for timed-out checks\n%s\n%s", r.code, r.stdout, lastLines(r.stderr, 20))
	}
}

// TestCancelCleansUp: Ctrl-C while a check hangs inside a mounted crash state leaves no mount,
// loop device, FUSE mount or process behind.
func TestCancelCleansUp(t *testing.T) {
	require(t, "ext4")
	started := filepath.Join(t.TempDir(), "started")
	t.Setenv("POWERCUT_TEST_STARTED", started)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		deadline := time.After(2 * time.Minute)
		for {
			if _, err := os.Stat(started); err == nil {
				time.Sleep(200 * time.Millisecond)
				cancel()
				return
			}
			select {
			case <-deadline:
				cancel()
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	r := runFS(t, ctx, "--fs", "ext4", "--check", `touch "$POWERCUT_TEST_STARTED"; cd "$POWERCUT_MNT" && sleep 987652`, "--model", "flush")
	if _, err := os.Stat(started); err != nil {
		t.Fatal("the check never started")
	}
	if r.code != cli.ExitError {
		t.Fatalf("exit %d after cancel, want %d\n%s", r.code, cli.ExitError, r.stderr)
	}
	t.Logf("cancelled run returned in %s: %s", time.Since(t0).Round(time.Millisecond), lastLines(r.stderr, 1))
}
