package fsgen_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/testenv"
)

func compare(t *testing.T, dir string, tr *fsgen.Trace, last int) []fsgen.Diff {
	t.Helper()
	d, err := fsgen.Compare(dir, tr, last)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantDiff(t *testing.T, diffs []fsgen.Diff, path, field string, c fsgen.Class) {
	t.Helper()
	for _, d := range diffs {
		if d.Path == path && d.Field == field && d.Class == c {
			return
		}
	}
	t.Errorf("want a %s diff on %s %s, have %v", c, path, field, diffs)
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestOracleTmpfs drives the comparison with hand-made "crash states" on tmpfs: the live tree
// keeps every promise; each change breaks exactly the promise it should, with the right class;
// fields and objects no point promised are not looked at.
func TestOracleTmpfs(t *testing.T) {
	id := "write-A_foo-append.fsync-A_foo+write-A_foo-ovw.sync"
	fresh := func() (string, *fsgen.Trace) {
		dir := shmDir(t)
		tr, _ := run(t, id, dir, "ext4")
		return dir, tr
	}
	// The finished workload is acceptable after either point.
	dir, tr := fresh()
	for last := 0; last <= 2; last++ {
		if d := compare(t, dir, tr, last); len(d) != 0 {
			t.Errorf("untouched tree, last=%d: %v", last, d)
		}
	}
	foo := func(d string) string { return filepath.Join(d, "A/foo") }
	setupFill := tr.States[len(tr.States)-1].Tree["A/foo"].Data[0]

	// Overwrite reverted (the state at p1): fine if only p1 was issued, old content after p2;
	// half of it landed: fine after p1 (a crash mid-way), old content after p2.
	dir, tr = fresh()
	writeAt(t, foo(dir), 4096, []byte(strings.Repeat(string(setupFill), 2048)))
	if d := compare(t, dir, tr, 1); len(d) != 0 {
		t.Errorf("half-landed overwrite after p1: %v", d)
	}
	wantDiff(t, compare(t, dir, tr, 2), "A/foo", "data", fsgen.ClassOldContent)

	// A byte no version ever had: corrupted, whichever point.
	dir, tr = fresh()
	writeAt(t, foo(dir), 100, []byte{0x7f})
	wantDiff(t, compare(t, dir, tr, 1), "A/foo", "data", fsgen.ClassDataCorrupted)

	// The append lost (size back to the setup's): old content after p1.
	dir, tr = fresh()
	if err := os.Truncate(foo(dir), fsgen.SetupSize); err != nil {
		t.Fatal(err)
	}
	wantDiff(t, compare(t, dir, tr, 1), "A/foo", "size", fsgen.ClassOldContent)

	// The file gone: missing after p1 (ext4 promises the name of an fsynced file), not before.
	dir, tr = fresh()
	if err := os.Remove(foo(dir)); err != nil {
		t.Fatal(err)
	}
	if d := compare(t, dir, tr, 0); len(d) != 0 {
		t.Errorf("nothing promised before p1, got %v", d)
	}
	wantDiff(t, compare(t, dir, tr, 1), "A/foo", "exists", fsgen.ClassFileMissing)
	wantDiff(t, compare(t, dir, tr, 2), "A", "entry foo", fsgen.ClassFileMissing)
	// POSIX does not promise the name: the same state is fine after the fsync.
	pdir := shmDir(t)
	ptr, _ := run(t, id, pdir, "posix")
	os.Remove(foo(pdir))
	if d := compare(t, pdir, ptr, 1); len(d) != 0 {
		t.Errorf("posix, fsynced file missing: %v", d)
	}

	// Mode: promised by fsync, not by fdatasync.
	dir, tr = fresh()
	os.Chmod(foo(dir), 0o600)
	wantDiff(t, compare(t, dir, tr, 1), "A/foo", "mode", fsgen.ClassMetadataCorrupted)
	ddir := shmDir(t)
	dtr, _ := run(t, "write-A_foo-append.fdatasync-A_foo", ddir, "ext4")
	os.Chmod(foo(ddir), 0o600)
	unix.Setxattr(foo(ddir), "user.other", []byte("x"), 0)
	if d := compare(t, ddir, dtr, 1); len(d) != 0 {
		t.Errorf("fdatasync promised mode or xattrs: %v", d)
	}
	// An unpromised object (B/x after an fsync of A/foo) is ignored; after a sync it is a
	// stray entry of the root.
	dir, tr = fresh()
	os.Mkdir(filepath.Join(dir, "B"), 0o755)
	if d := compare(t, dir, tr, 1); len(d) != 0 {
		t.Errorf("stray dir after fsync: %v", d)
	}
	wantDiff(t, compare(t, dir, tr, 2), ".", "entry B", fsgen.ClassMetadataCorrupted)
	v, err := fsgen.Check(dir, tr, 2)
	if err != nil {
		t.Fatal(err)
	}
	if v.Class != fsgen.ClassMetadataCorrupted || v.OK() {
		t.Errorf("verdict %+v", v)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("usability check left %v", ents)
	}
	if _, err := fsgen.Compare(dir, tr, 3); err == nil {
		t.Error("Compare accepted point 3 of 2")
	}
}

// TestUsableReadOnly: a tree where files cannot be created is unusable.
func TestUsableReadOnly(t *testing.T) {
	testenv.RequireRoot(t)
	dir := shmDir(t)
	run(t, "creat-A_foo.sync", dir, "ext4")
	ro := t.TempDir()
	if out, err := exec.Command("mount", "--bind", "-o", "ro", dir, ro).CombinedOutput(); err != nil {
		t.Skipf("skipping: read-only bind mount: %v: %s", err, out)
	}
	defer exec.Command("umount", ro).Run()
	d := fsgen.Usable(ro)
	found := false
	for _, x := range d {
		if x.Class == fsgen.ClassUnusable && x.Field == "create" {
			found = true
		}
	}
	if !found {
		t.Errorf("read-only tree judged usable: %v", d)
	}
	if len(fsgen.Usable(dir)) != 0 {
		t.Error("writable tree judged unusable")
	}
}
