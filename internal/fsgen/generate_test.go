package fsgen_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/powercut/powercut/internal/fsgen"
)

// TestSeq1Counts pins the seq-1 space kind by kind against counts derived by hand from the
// bounds (4 files in 2 dirs; persistence points: the touched objects, their parents, sync):
//
//	creat 4×(fsync F, fdatasync F, fsync parent, sync)=16   mkdir 2×(fsync D, fsync root, sync)=6
//	write 16×(fsync, fdatasync, sync)=48   dwrite 8×3=24   mwrite 8×3=24   falloc 48×3=144
//	truncate 12×3=36   link: 4 same-dir pairs×4 + 8 cross-dir pairs×5 = 56   unlink 4×2=8
//	rename files: 4 same-dir×3 + 8 cross×4 = 44   replace 44   rename dirs 2×3=6
//	symlink 12×2=24   setxattr 4×3=12   rmxattr 12   rmdir 2×2=4            total 508
func TestSeq1Counts(t *testing.T) {
	ws, err := fsgen.Generate(1, fsgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"creat": 16, "mkdir": 6, "write": 48, "dwrite": 24, "mwrite": 24, "falloc": 144,
		"truncate": 36, "link": 56, "unlink": 8, "rename": 50, "replace": 44, "symlink": 24,
		"setxattr": 12, "rmxattr": 12, "rmdir": 4}
	got := map[string]int{}
	for _, w := range ws {
		got[w.Steps[0].Core.Kind.String()]++
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("seq-1 per kind:\n got %v\nwant %v", got, want)
	}
	if len(ws) != 508 || fsgen.Count(1, fsgen.Options{}) != len(ws) {
		t.Errorf("seq-1: %d workloads, Count %d, want 508", len(ws), fsgen.Count(1, fsgen.Options{}))
	}
	nested, _ := fsgen.Generate(1, fsgen.Options{Nested: true})
	if len(nested) <= len(ws) {
		t.Errorf("nested seq-1 has %d workloads, not more than the %d without A/C", len(nested), len(ws))
	}
	if _, err := fsgen.Generate(4, fsgen.Options{}); err == nil {
		t.Error("Generate(4) accepted")
	}
}

// TestIDRoundTrip: every seq-1 workload (with and without A/C) and a sample of seq-2 and seq-3
// parse back from their IDs to the same workload; IDs are unique and file-name safe; the last
// persistence point is never none; the order is deterministic.
func TestIDRoundTrip(t *testing.T) {
	check := func(w *fsgen.Workload, seen map[string]bool) {
		t.Helper()
		id := w.ID()
		if seen[id] {
			t.Fatalf("duplicate ID %s", id)
		}
		seen[id] = true
		if strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-") != "" {
			t.Fatalf("ID %q has unsafe characters", id)
		}
		if w.Steps[len(w.Steps)-1].Persist.Kind == fsgen.None {
			t.Fatalf("%s ends with none", id)
		}
		p, err := fsgen.ParseID(id)
		if err != nil {
			t.Fatalf("ParseID(%s): %v", id, err)
		}
		if !reflect.DeepEqual(p, w) {
			t.Fatalf("ParseID(%s) differs:\n got %+v\nwant %+v", id, p, w)
		}
	}
	for _, o := range []fsgen.Options{{}, {Nested: true}} {
		seen := map[string]bool{}
		for w := range fsgen.All(1, o) {
			check(w, seen)
		}
	}
	for seq, every := range map[int]int{2: 997, 3: 30_011} {
		seen := map[string]bool{}
		i, n := 0, 0
		for w := range fsgen.All(seq, fsgen.Options{}) {
			if i%every == 0 {
				check(w, seen)
				n++
			}
			i++
			if seq == 3 && i > 400_000 {
				break
			}
		}
		if n < 10 {
			t.Errorf("seq-%d: only %d sampled", seq, n)
		}
	}
	a, _ := fsgen.Generate(1, fsgen.Options{})
	b, _ := fsgen.Generate(1, fsgen.Options{})
	if !reflect.DeepEqual(a, b) {
		t.Error("two generations differ")
	}
}

func TestParseIDRejects(t *testing.T) {
	for _, id := range []string{
		"",
		"write-A_foo-append",                // no persistence point
		"write-A_foo-append.none",           // last is none
		"frob-A_foo.sync",                   // unknown op
		"write-A_foo-sideways.sync",         // unknown shape
		"falloc-A_foo-weird-append.sync",    // unknown mode
		"sync.fsync-A_foo",                  // persistence point as core op
		"creat-A_foo.sync+creat-A_foo.sync", // creat of an existing file: no setup can satisfy it
		"write-A_foo-append.fdatasync-B",    // fdatasync of a directory
	} {
		if _, err := fsgen.ParseID(id); !errors.Is(err, fsgen.ErrBadID) {
			t.Errorf("ParseID(%q) = %v, want ErrBadID", id, err)
		}
	}
}

// TestSetupBeforeCore: the setup a core operation needs comes right before it, marked Setup, and
// the data operations' offsets follow the file's size.
func TestSetupBeforeCore(t *testing.T) {
	w, err := fsgen.ParseID("link-A_foo-B_bar.fsync-B_bar+write-B_bar-append.fdatasync-A_foo")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range w.Actions {
		s := fsgen.Syscall(a.Op)
		if a.Setup {
			s = "setup " + s
		}
		got = append(got, s)
	}
	want := []string{
		`setup mkdir("A", 0755)`,
		`setup creat("A/foo", 0644)`,
		`setup pwrite("A/foo", 16384 bytes of 0x63, off 0)`,
		`setup mkdir("B", 0755)`,
		`link("A/foo", "B/bar")`,
		`fsync("B/bar")`,
		`pwrite("B/bar", 4096 bytes of 0x67, off 16384)`,
		`fdatasync("A/foo")`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("program:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if w.Points() != 2 || w.Actions[5].Point != 1 || w.Actions[7].Point != 2 {
		t.Errorf("points: %d, actions %+v", w.Points(), w.Actions)
	}
}
