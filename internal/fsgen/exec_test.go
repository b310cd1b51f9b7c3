package fsgen_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/testenv"
)

// shmDir is a fresh directory on tmpfs (/dev/shm), removed after the test.
func shmDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != 0x01021994 {
		t.Skip("skipping: /dev/shm is not a tmpfs")
	}
	d, err := os.MkdirTemp("/dev/shm", "fsgen-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mustParse(t *testing.T, id string) *fsgen.Workload {
	t.Helper()
	w, err := fsgen.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func run(t *testing.T, id, dir, fs string) (*fsgen.Trace, []string) {
	t.Helper()
	g, err := fsgen.GuaranteesFor(fs)
	if err != nil {
		t.Fatal(err)
	}
	var marks []string
	tr, err := fsgen.Run(context.Background(), mustParse(t, id), dir, fsgen.ExecOptions{
		Guarantees: g,
		Mark:       func(n string) error { marks = append(marks, n); return nil },
	})
	if err != nil {
		t.Fatalf("Run(%s): %v", id, err)
	}
	return tr, marks
}

// TestRunSnapshot executes a workload on tmpfs: the marks come after each persistence point, the
// snapshots hold what the syscalls did, and each point's promise follows the table.
func TestRunSnapshot(t *testing.T) {
	dir := shmDir(t)
	tr, marks := run(t, "write-A_foo-append.fsync-A_foo+symlink-A_foo-B_bar.fsync-B+setxattr-A_foo.fdatasync-A_foo", dir, "ext4")
	if !reflect.DeepEqual(marks, []string{"p1", "p2", "p3"}) {
		t.Errorf("marks %v", marks)
	}
	if len(tr.Points) != 3 {
		t.Fatalf("points %+v", tr.Points)
	}
	p1 := tr.States[tr.Points[0].State].Tree
	foo := p1["A/foo"]
	if foo == nil || foo.Type != fsgen.TypeFile || foo.Size != fsgen.SetupSize+4096 || foo.Nlink != 1 || foo.Mode != 0o644 {
		t.Fatalf("A/foo at p1: %s", brief(foo))
	}
	if !bytes.Equal(foo.Data[:fsgen.SetupSize], bytes.Repeat([]byte{foo.Data[0]}, fsgen.SetupSize)) ||
		!bytes.Equal(foo.Data[fsgen.SetupSize:], bytes.Repeat([]byte{foo.Data[fsgen.SetupSize]}, 4096)) ||
		foo.Data[0] == foo.Data[fsgen.SetupSize] {
		t.Errorf("A/foo data is not setup fill then append fill")
	}
	end := tr.States[len(tr.States)-1].Tree
	if l := end["B/bar"]; l == nil || l.Type != fsgen.TypeSymlink || l.Target != "../A/foo" {
		t.Errorf("B/bar: %+v", l)
	}
	if x := end["A/foo"].Xattrs[fsgen.XattrName]; x == "" {
		t.Errorf("A/foo xattrs %v", end["A/foo"].Xattrs)
	}
	if e := end["B"].Entries; !reflect.DeepEqual(e, map[string]string{"bar": fsgen.TypeSymlink}) {
		t.Errorf("B entries %v", e)
	}
	want := [][]fsgen.Expect{
		{{Path: "A/foo", Fields: fsgen.FType | fsgen.FSize | fsgen.FMode | fsgen.FNlink | fsgen.FXattrs | fsgen.FData, Named: true},
			{Path: "A", Fields: fsgen.FType, Named: true}},
		{{Path: "B", Fields: fsgen.FType | fsgen.FMode | fsgen.FNlink | fsgen.FXattrs | fsgen.FEntries, Named: true},
			{Path: "B/bar", Fields: fsgen.FType | fsgen.FTarget, Named: true}},
		{{Path: "A/foo", Fields: fsgen.FType | fsgen.FSize | fsgen.FData, Named: true},
			{Path: "A", Fields: fsgen.FType, Named: true}},
	}
	for i, p := range tr.Points {
		if !reflect.DeepEqual(p.Promised, want[i]) {
			t.Errorf("point %d promised %+v, want %+v", i+1, p.Promised, want[i])
		}
	}
	// POSIX promises no names.
	tr2, _ := run(t, "creat-A_foo.fsync-A_foo", shmDir(t), "posix")
	if p := tr2.Points[0].Promised; len(p) != 1 || p[0].Named {
		t.Errorf("posix fsync promise %+v", p)
	}
	// The executor's trace round-trips through JSON-able types (the harness may store it).
	if fsgen.LastPoint([]string{"x", "p2", "p1", "p10x"}) != 2 {
		t.Error("LastPoint")
	}
}

// TestValidatorDrops: every seq-1 workload runs on tmpfs; the nested set's directory renamed
// into its own subdirectory, and a seq-2 rmdir of a directory an earlier step filled, are
// dropped with the kernel's error.
func TestValidatorDrops(t *testing.T) {
	v, err := fsgen.NewValidator()
	if errors.Is(err, fsgen.ErrNoTmpfs) {
		t.Skip("skipping: ", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx := context.Background()
	ws, _ := fsgen.Generate(1, fsgen.Options{})
	valid, dropped, err := v.Filter(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dropped {
		t.Errorf("seq-1 workload %s dropped: %v", d.Workload.ID(), d.Err)
	}
	t.Logf("seq-1: %d valid of %d", len(valid), len(ws))
	nested, _ := fsgen.Generate(1, fsgen.Options{Nested: true})
	_, dropped, err = v.Filter(ctx, nested)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]error{}
	for _, d := range dropped {
		got[d.Workload.ID()] = d.Err.Err
	}
	for _, id := range []string{"rename-A-A_C.fsync-A_C", "rename-A-A_C.sync"} {
		if !errors.Is(got[id], unix.EINVAL) {
			t.Errorf("%s: dropped with %v, want EINVAL", id, got[id])
		}
	}
	for id := range got {
		if !strings.HasPrefix(id, "rename-A-A_C.") {
			t.Errorf("nested workload %s dropped: %v", id, got[id])
		}
	}
	bad := mustParse(t, "creat-A_foo.sync+rmdir-A.sync")
	var oe *fsgen.OpError
	if err := v.Validate(ctx, bad); !errors.As(err, &oe) || !errors.Is(err, unix.ENOTEMPTY) || oe.Index != 3 {
		t.Errorf("rmdir of a non-empty dir: %v", err)
	}
}

// TestScriptMatchesRun runs the printed script of a sample of seq-1 workloads under /bin/sh and
// compares the tree it leaves with the executor's: the script issues the same operations.
func TestScriptMatchesRun(t *testing.T) {
	testenv.RequireTool(t, "xfs_io")
	_, haveSetfattr := exec.LookPath("setfattr")
	ws, _ := fsgen.Generate(1, fsgen.Options{})
	n := 0
	for i, w := range ws {
		id := w.ID()
		// tmpfs has no FALLOC_FL_ZERO_RANGE (xfs_io fzero fails there, the executor substitutes).
		if strings.Contains(id, "-zero-") || strings.Contains(id, "xattr") && haveSetfattr != nil {
			continue
		}
		if i%5 != 0 && !strings.Contains(id, "mwrite") && !strings.Contains(id, "symlink") {
			continue
		}
		a, b := shmDir(t), shmDir(t)
		if _, err := fsgen.Run(context.Background(), w, a, fsgen.ExecOptions{Tmpfs: true}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		script := filepath.Join(t.TempDir(), "w.sh")
		if err := os.WriteFile(script, []byte(w.Script()), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", script)
		cmd.Env = append(os.Environ(), "POWERCUT_MNT="+b, "POWERCUT_MARK=:")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: script failed: %v\n%s\n%s", id, err, out, w.Script())
		}
		ta, err := fsgen.Snapshot(a)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := fsgen.Snapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ta, tb) {
			for _, p := range ta.Paths() {
				if !reflect.DeepEqual(ta[p], tb[p]) {
					t.Errorf("%s: %s differs:\n run    %s\n script %s", id, p, brief(ta[p]), brief(tb[p]))
				}
			}
			t.Fatalf("%s: script and executor disagree\n%s", id, w.Script())
		}
		n++
	}
	t.Logf("%d scripts matched the executor", n)
	if n < 50 {
		t.Errorf("only %d scripts compared", n)
	}
	s := mustParse(t, "write-A_foo-append.fsync-A_foo").Script()
	for _, want := range []string{"mkdir A", ": > A/foo", "xfs_io -c 'pwrite -q -S 0x64 16384 4096' A/foo",
		"xfs_io -r -c fsync A/foo", "$mark p1", "# setup: creat(\"A/foo\", 0644)"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

// brief prints an object without its data.
func brief(o *fsgen.Object) string {
	if o == nil {
		return "<nil>"
	}
	c := *o
	c.Data = nil
	return fmt.Sprintf("%+v", c)
}
