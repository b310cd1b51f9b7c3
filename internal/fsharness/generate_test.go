package fsharness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/cli"
	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/fsharness"
	"github.com/powercut/powercut/internal/testenv"
)

type genReport struct {
	Selected   int            `json:"selected"`
	Ran        int            `json:"ran"`
	Failed     int            `json:"failed"`
	Checked    int            `json:"checked"`
	Violations int            `json:"violations"`
	ByClass    map[string]int `json:"violations_by_class"`
	Workloads  []struct {
		ID string `json:"id"`
	} `json:"workloads"`
}

// runGen runs `powercut fs --generate/--workload-id ...` in process and asserts nothing was
// left behind.
func runGen(t *testing.T, args ...string) (int, string, genReport) {
	t.Helper()
	out := t.TempDir()
	var so, se bytes.Buffer
	before := takeSnapshot()
	args = append([]string{"fs", "--out", out}, args...)
	code := cli.Run(context.Background(), args, &so, &se)
	t.Logf("powercut %s -> exit %d\n%s\nstderr:\n%s", strings.Join(args, " "), code, lastLines(so.String(), 8), lastLines(se.String(), 4))
	var rep genReport
	if b, err := os.ReadFile(filepath.Join(out, fsharness.ReportName)); err == nil {
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("report.json: %v", err)
		}
	}
	assertClean(t, before)
	return code, so.String(), rep
}

// A seeded handful of seq-1 workloads on ext4 with default options keeps every promise.
func TestGeneratedExt4Default(t *testing.T) {
	require(t, "ext4")
	code, _, rep := runGen(t, "--fs", "ext4", "--generate", "seq-1", "--limit", "6", "--seed", "7", "--jobs", "2")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if rep.Selected != 6 || rep.Ran != 6 || rep.Checked < 6 || rep.Violations != 0 {
		t.Fatalf("report %+v: want 6 workloads run, states checked, no violation", rep)
	}
	// The seeded subset is not the first six of the generation order.
	first, err := fsgen.Generate(1, fsgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	same := true
	for i, w := range rep.Workloads {
		same = same && w.ID == first[i].ID()
	}
	if same {
		t.Errorf("--seed 7 ran the first six workloads in order: not a seeded subset")
	}
}

// Without barriers ext4's fsync promises are not kept under the reorder model, and each
// violation is classified and shows the workload, the replay line and the per-object diff.
func TestGeneratedExt4Nobarrier(t *testing.T) {
	require(t, "ext4")
	const id = "creat-A_foo.fsync-A_foo"
	code, stdout, rep := runGen(t, "--fs", "ext4", "--workload-id", id, "--mount-opts", "nobarrier", "--model", "reorder")
	if code != 1 || rep.Violations == 0 {
		t.Fatalf("exit %d, %d violations: want violations (exit 1)", code, rep.Violations)
	}
	known := map[string]bool{"file-missing": true, "old-content": true, "data-corrupted": true, "metadata-corrupted": true,
		"unusable": true, "fsck": true, "unmountable": true}
	for c := range rep.ByClass {
		if !known[c] {
			t.Errorf("violation class %q is not one of B3's", c)
		}
	}
	if rep.ByClass["file-missing"] == 0 {
		t.Errorf("classes %v: want file-missing (the fsynced A/foo lost)", rep.ByClass)
	}
	for _, want := range []string{"VIOLATION reorder:", "workload " + id, "A/foo\texists\tpresent\tmissing\tfile-missing",
		"rebuild: powercut replay --log", "workloads/" + id + ".pclog", "# powercut generated workload " + id} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// The noauto_da_alloc case: a file replaced by rename without fsync may come back empty or old
// after a crash; only fsync(A) was issued, which promises A's entries, not the file's data. That
// is no violation. fsync of the file itself promises its data, and ext4 keeps that promise.
func TestGeneratedNoAutoDaAlloc(t *testing.T) {
	require(t, "ext4")
	for _, id := range []string{"write-A_foo-append.none+replace-A_foo-A_bar.fsync-A", "write-A_foo-append.none+replace-A_foo-A_bar.fsync-A_bar"} {
		code, _, rep := runGen(t, "--fs", "ext4", "--workload-id", id, "--mount-opts", "noauto_da_alloc", "--model", "reorder")
		if code != 0 || rep.Ran != 1 || rep.Checked == 0 {
			t.Errorf("%s: exit %d, report %+v: want states checked and no violation", id, code, rep)
		}
	}
}

// --workload-id reruns exactly the one workload named.
func TestGeneratedWorkloadID(t *testing.T) {
	require(t, "ext4")
	const id = "link-A_foo-B_bar.fsync-B_bar"
	code, _, rep := runGen(t, "--fs", "ext4", "--workload-id", id, "--jobs", "2")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if rep.Selected != 1 || rep.Ran != 1 || len(rep.Workloads) != 1 || rep.Workloads[0].ID != id {
		t.Fatalf("report %+v: want exactly %s", rep, id)
	}
	code, _, _ = runGen(t, "--fs", "ext4", "--workload-id", "link-A_foo-A_foo.fsync-A")
	if code != 2 {
		t.Errorf("an invalid ID: exit %d, want 2", code)
	}
}

// The printed script issues the same operations as the in-process executor: run on tmpfs, it
// leaves the same tree.
func TestPrintedScriptRunsOnTmpfs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "xfs_io", "setfattr", "truncate")
	ids := []string{
		"write-A_foo-ovwu.fsync-A_foo+rename-A-B.sync",
		"falloc-A_bar-punch-ovwu.fdatasync-A_bar+symlink-A_bar-B_foo.fsync-B",
		"mwrite-B_foo-ovwu.fsync-B_foo+setxattr-B_foo.fsync-B_foo",
		"dwrite-A_foo-append.sync+truncate-A_foo-shrinku.fsync-A_foo",
	}
	for _, id := range ids {
		w, err := fsgen.ParseID(id)
		if err != nil {
			t.Fatal(err)
		}
		var so, se bytes.Buffer
		if code := cli.Run(context.Background(), []string{"fs", "--workload-id", id, "--print-script"}, &so, &se); code != 0 {
			t.Fatalf("--print-script %s: exit %d: %s", id, code, se.String())
		}
		viaScript, viaGo := tmpfsDir(t), tmpfsDir(t)
		cmd := exec.Command("/bin/sh", "-c", so.String())
		cmd.Env = append(os.Environ(), "POWERCUT_MNT="+viaScript, "POWERCUT_MARK=:")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: the printed script failed on tmpfs: %v\n%s\n%s", id, err, out, so.String())
		}
		if _, err := fsgen.Run(context.Background(), w, viaGo, fsgen.ExecOptions{NoSnapshots: true, Tmpfs: true}); err != nil {
			t.Fatal(err)
		}
		a, err := fsgen.Snapshot(viaScript)
		if err != nil {
			t.Fatal(err)
		}
		b, err := fsgen.Snapshot(viaGo)
		if err != nil {
			t.Fatal(err)
		}
		delete(a, ".")
		delete(b, ".")
		if !reflect.DeepEqual(a, b) {
			for _, p := range append(a.Paths(), b.Paths()...) {
				if !reflect.DeepEqual(a[p], b[p]) {
					t.Errorf("%s: %s differs: script %+v, executor %+v", id, p, a[p], b[p])
				}
			}
		}
	}
}

// tmpfsDir is a fresh directory on a private tmpfs.
func tmpfsDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("skipping: cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	return d
}
