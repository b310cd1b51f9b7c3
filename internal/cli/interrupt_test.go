package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/fsharness"
	"github.com/powercut/powercut/internal/leftovers"
	"github.com/powercut/powercut/internal/testenv"
)

func requireFS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount, FUSE)")
	}
	testenv.RequireLoop(t)
	for _, tool := range fsharness.Tools("ext4") {
		testenv.RequireTool(t, tool)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// fsRun is a `powercut fs` process started by a test, in its own process group.
type fsRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

func startFS(t *testing.T, bin string, env []string, args ...string) *fsRun {
	t.Helper()
	r := &fsRun{done: make(chan struct{})}
	r.cmd = exec.Command(bin, append([]string{"fs", "--fs", "ext4"}, args...)...)
	r.cmd.Dir = "../.."
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		// The recording an interrupted or failed run keeps (it says where), and the one of a
		// killed run (named when it was made).
		for _, d := range regexp.MustCompile(`(?:kept in |base image )(\S+?)(?:/base\.img)?\s`).FindAllStringSubmatch(r.stderr.String(), -1) {
			if strings.HasPrefix(d[1], os.TempDir()+"/powercut-fs-") {
				os.RemoveAll(d[1])
			}
		}
	})
	return r
}

func (r *fsRun) exitCode() int {
	if r.cmd.ProcessState == nil {
		return -100
	}
	return r.cmd.ProcessState.ExitCode()
}

// leftoversOf lists what process pid owns or owned: loop devices, mounts (FUSE or not) and
// directories under its own directory TMPDIR/powercut-<pid>-*, and processes that refer to it.
func leftoversOf(pid int) []string {
	var got []string
	mark := fmt.Sprintf("/powercut-%d-", pid)
	if out, err := exec.Command("losetup", "-a").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, mark) {
				got = append(got, "loop: "+l)
			}
		}
	}
	b, _ := os.ReadFile("/proc/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, mark) {
			got = append(got, "mount: "+l)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("powercut-%d-*", pid)))
	for _, d := range dirs {
		got = append(got, "dir: "+d)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		cl, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		env, _ := os.ReadFile("/proc/" + p.Name() + "/environ")
		st, _ := os.ReadFile("/proc/" + p.Name() + "/stat")
		if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			continue
		}
		if bytes.Contains(cl, []byte(mark)) || bytes.Contains(env, []byte(mark)) {
			got = append(got, "process: "+p.Name()+" "+strings.ReplaceAll(string(cl), "\x00", " "))
		}
	}
	return got
}

var interruptedRE = regexp.MustCompile(`interrupted after (\d+) of (\d+) states`)

// TestFSInterruptAnywhereLeavesNothing interrupts `powercut fs` at points spread over a whole
// run (mkfs, losetup and mount of the recording, the workload, the checks' mounts, checks, fsck
// and unmounts), with SIGINT to the process, SIGINT to its process group (a terminal's Ctrl-C:
// losetup, mount and umount get it too) and SIGTERM. Each time it must exit within 5 s with
// "interrupted after N of M states", exit 2 without violations (1 with), and leave no loop
// device, mount, FUSE mount, directory or process.
func TestFSInterruptAnywhereLeavesNothing(t *testing.T) {
	requireFS(t)
	bin := nbdBuildPowercut(t)
	type point struct {
		delay time.Duration
		sig   syscall.Signal
		group bool
		bad   bool // a check that fails on some states: violations before the interrupt
	}
	ms := time.Millisecond
	points := []point{
		{20 * ms, syscall.SIGINT, false, false}, {100 * ms, syscall.SIGINT, true, false},
		{180 * ms, syscall.SIGINT, false, false}, {260 * ms, syscall.SIGTERM, false, false},
		{350 * ms, syscall.SIGINT, true, false}, {500 * ms, syscall.SIGINT, false, false},
		{800 * ms, syscall.SIGTERM, true, false}, {1100 * ms, syscall.SIGINT, false, false},
		{1500 * ms, syscall.SIGINT, true, false}, {2000 * ms, syscall.SIGINT, false, false},
		{2600 * ms, syscall.SIGTERM, false, false}, {1800 * ms, syscall.SIGINT, true, true},
	}
	var worst time.Duration
	for _, p := range points {
		name := fmt.Sprintf("%s-%v-group=%v-bad=%v", p.sig, p.delay, p.group, p.bad)
		check := "testdata/fs/check.sh"
		if p.bad {
			check = `test "$POWERCUT_LAST_MARK" != fsync-2`
		}
		r := startFS(t, bin, []string{"POWERCUT_FILES=5"}, "--workload", "testdata/fs/workload.sh", "--check", check)
		pid := r.cmd.Process.Pid
		time.Sleep(p.delay)
		target := pid
		if p.group {
			target = -pid
		}
		t0 := time.Now()
		if err := syscall.Kill(target, p.sig); err != nil {
			t.Fatalf("%s: kill: %v", name, err)
		}
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: still running 5 s after the signal; stderr:\n%s", name, r.stderr.String())
			syscall.Kill(-pid, syscall.SIGKILL)
			<-r.done
		}
		took := time.Since(t0)
		worst = max(worst, took)
		stderr := r.stderr.String()
		if ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == p.sig && stderr == "" {
			// The signal came before the Go runtime had run powercut's main (process start-up
			// takes tens of milliseconds on a loaded VM): no program can catch it then, and the
			// kernel's default action ends the process. It had made nothing, so nothing may be left.
			if left := leftoversOf(pid); len(left) > 0 {
				t.Errorf("%s: killed by the signal before start-up ended, and left behind:\n%s", name, strings.Join(left, "\n"))
			}
			t.Logf("%s: the signal came before main started: killed by it, nothing printed, nothing left", name)
			continue
		}
		m := interruptedRE.FindStringSubmatch(stderr)
		if m == nil {
			t.Errorf("%s: exit %d without \"interrupted after N of M states\" (did the run end before the signal?); stderr:\n%s", name, r.exitCode(), stderr)
		}
		want := 2
		if p.bad && strings.Contains(stderr, "violations so far") {
			want = 1
		}
		if p.bad && want != 1 {
			t.Errorf("%s: no violation reported before the interrupt; stderr:\n%s", name, stderr)
		}
		if r.exitCode() != want {
			t.Errorf("%s: exit %d, want %d; stderr:\n%s", name, r.exitCode(), want, stderr)
		}
		if left := leftoversOf(pid); len(left) > 0 {
			t.Errorf("%s: left behind:\n%s\nstderr:\n%s", name, strings.Join(left, "\n"), stderr)
		}
		if m != nil {
			t.Logf("%s: %s, exited %v after the signal (exit %d)", name, m[0], took.Round(time.Millisecond), r.exitCode())
		}
	}
	t.Logf("slowest exit after a signal: %v", worst.Round(time.Millisecond))
}

// waitFor polls cond every 20 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestCleanupAfterSIGKILL kills `powercut fs` with SIGKILL while a check runs on a mounted
// crash state, and checks that `powercut cleanup` removes everything it left (the check's
// process, the crash state's mount and loop device, the scratch FUSE mount, the directories)
// and lists each, while a powercut run alive at the same moment is not touched and completes.
func TestCleanupAfterSIGKILL(t *testing.T) {
	requireFS(t)
	bin := nbdBuildPowercut(t)
	// The victim: its check sleeps on the mounted crash state, so the kill lands while a
	// mount, its loop device, the scratch FUSE file and a check process all exist.
	victim := startFS(t, bin, nil, "--workload", "testdata/fs/workload.sh", "--check", "sleep 60")
	vpid := victim.cmd.Process.Pid
	// The live run: an ordinary run, exploring while cleanup runs.
	live := startFS(t, bin, []string{"POWERCUT_FILES=5"}, "--workload", "testdata/fs/workload.sh", "--check", "testdata/fs/check.sh")
	lpid := live.cmd.Process.Pid
	busy := func(pid int) func() bool {
		return func() bool {
			n := 0
			for _, l := range leftoversOf(pid) {
				if strings.HasPrefix(l, "process: ") && strings.Contains(l, "sleep 60") || strings.Contains(l, "powercut-scratch-") && strings.HasPrefix(l, "loop: ") {
					n++
				}
			}
			return n >= 2
		}
	}
	if !waitFor(30*time.Second, busy(vpid)) {
		t.Fatalf("the victim never reached a check: %v\nstderr:\n%s", leftoversOf(vpid), victim.stderr.String())
	}
	if !waitFor(30*time.Second, func() bool { return strings.Contains(live.stderr.String(), "exploring") }) {
		t.Fatalf("the live run never started exploring; stderr:\n%s", live.stderr.String())
	}
	syscall.Kill(vpid, syscall.SIGKILL)
	<-victim.done
	before := leftoversOf(vpid)
	t.Logf("left by SIGKILL:\n%s", strings.Join(before, "\n"))
	kinds := map[string]bool{}
	for _, l := range before {
		kinds[strings.SplitN(l, ":", 2)[0]] = true
	}
	for _, k := range []string{"loop", "mount", "dir", "process"} {
		if !kinds[k] {
			t.Fatalf("the SIGKILL left no %s: nothing to test (left: %v)", k, before)
		}
	}

	out, err := exec.Command(bin, "cleanup", "--json").Output()
	if err != nil {
		t.Fatalf("powercut cleanup: %v\n%s", err, out)
	}
	var res struct {
		Removed []leftovers.Action `json:"removed"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("cleanup --json: %v\n%s", err, out)
	}
	listed := map[string]bool{}
	for _, a := range res.Removed {
		t.Logf("cleanup: %s", a)
		if a.Err != "" {
			t.Errorf("cleanup failed: %s", a)
		}
		if a.Owner == lpid || strings.Contains(a.Path+a.Detail, fmt.Sprintf("/powercut-%d-", lpid)) {
			t.Errorf("cleanup touched the live run %d: %s", lpid, a)
		}
		listed[a.Kind] = true
	}
	for _, k := range []string{"process", "mount", "loop", "fuse", "dir"} {
		if !listed[k] {
			t.Errorf("cleanup listed no %s", k)
		}
	}
	if after := leftoversOf(vpid); len(after) > 0 {
		t.Errorf("still there after cleanup:\n%s", strings.Join(after, "\n"))
	}
	select {
	case <-live.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the live run did not finish; stderr:\n%s", live.stderr.String())
	}
	if c := live.exitCode(); c != 0 {
		t.Errorf("the live run exited %d, want 0; stderr:\n%s", c, live.stderr.String())
	}
	if left := leftoversOf(lpid); len(left) > 0 {
		t.Errorf("the live run left: %v", left)
	}
	// A second sweep finds nothing of the victim.
	out, _ = exec.Command(bin, "cleanup", "--dry-run").Output()
	if strings.Contains(string(out), fmt.Sprintf("powercut %d", vpid)) {
		t.Errorf("a second cleanup still finds the victim's leftovers:\n%s", out)
	}
}

// TestExploreInterruptLeavesNothing interrupts `powercut explore --check` (scratch files served
// through FUSE, a check running) at several points: it must exit within 5 s with "interrupted
// after N of M states" and exit 2, leaving no FUSE mount, directory or process.
func TestExploreInterruptLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE scratch files)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	bin := nbdBuildPowercut(t)
	logPath, basePath := smallLog(t)
	for _, p := range []struct {
		delay time.Duration
		sig   syscall.Signal
	}{{50 * time.Millisecond, syscall.SIGINT}, {700 * time.Millisecond, syscall.SIGTERM}, {1500 * time.Millisecond, syscall.SIGINT}} {
		name := fmt.Sprintf("%s-%v", p.sig, p.delay)
		var stderr bytes.Buffer
		c := exec.Command(bin, "explore", "--log", logPath, "--base", basePath, "--model", "torn", "--strategy", "exhaustive", "--check", "sleep 0.3")
		c.Stderr = &stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		time.Sleep(p.delay)
		c.Process.Signal(p.sig)
		t0 := time.Now()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: still running 5 s after the signal", name)
			c.Process.Kill()
			<-done
		}
		if m := interruptedRE.FindString(stderr.String()); m == "" {
			t.Errorf("%s: no \"interrupted after N of M states\"; stderr:\n%s", name, stderr.String())
		} else {
			t.Logf("%s: %s, exited %v after the signal", name, m, time.Since(t0).Round(time.Millisecond))
		}
		if code := c.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", name, code, stderr.String())
		}
		if left := leftoversOf(c.Process.Pid); len(left) > 0 {
			t.Errorf("%s: left behind:\n%s", name, strings.Join(left, "\n"))
		}
	}
}
