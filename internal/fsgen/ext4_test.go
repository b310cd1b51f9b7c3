package fsgen_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/fstool"
	"github.com/powercut/powercut/internal/testenv"
)

// mountImage attaches img to a loop device and mounts it; the returned function (also
// registered with t.Cleanup) unmounts and detaches, and is safe to call twice.
func mountImage(t *testing.T, img, fs string) (string, func()) {
	t.Helper()
	dev, err := fstool.Attach(context.Background(), img, false)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", fs, dev, mnt).CombinedOutput(); err != nil {
		fstool.Detach(dev)
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	done := false
	release := func() {
		if done {
			return
		}
		done = true
		for i := 0; i < 20; i++ {
			if exec.Command("umount", mnt).Run() == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := fstool.Detach(dev); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	}
	t.Cleanup(release)
	return mnt, release
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestExt4EndToEnd runs a generated workload on a real ext4 over a loop device. Remounted
// without a crash, the oracle finds every promise kept. The image as it was at the first
// persistence point (copied from the mark callback, replayed by the mount like a crash) is a
// legal crash state after p1 but, judged after p3, has old content in A/foo and B/bar missing. A
// block of A/foo overwritten with garbage is data corruption.
func TestExt4EndToEnd(t *testing.T) {
	testenv.RequireLoop(t)
	testenv.RequireTool(t, "mkfs.ext4", "mount", "umount")
	dir := t.TempDir()
	img := filepath.Join(dir, "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	// No lazy init: the kernel's background zeroing would write into the copies.
	if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	g, err := fsgen.GuaranteesFor("ext4")
	if err != nil {
		t.Fatal(err)
	}
	w := mustParse(t, "write-A_foo-append.sync+write-A_foo-ovw.fsync-A_foo+creat-B_bar.fsync-B_bar")
	p1 := filepath.Join(dir, "p1.img")
	mnt, release := mountImage(t, img, "ext4")
	var marks []string
	tr, err := fsgen.Run(context.Background(), w, mnt, fsgen.ExecOptions{Guarantees: g, Mark: func(n string) error {
		marks = append(marks, n)
		if n == "p1" {
			// After sync(2) returned, every write reached the loop device's backing file.
			copyFile(t, img, p1)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(marks, ",") != "p1,p2,p3" {
		t.Fatalf("marks %v", marks)
	}
	release()

	// No crash: everything promised is there, and the tree is usable.
	mnt, release = mountImage(t, img, "ext4")
	if d := compare(t, mnt, tr, 3); len(d) != 0 {
		t.Errorf("clean remount: %v", d)
	}
	release()

	// The state at p1.
	mnt, release = mountImage(t, p1, "ext4")
	if d := compare(t, mnt, tr, 1); len(d) != 0 {
		t.Errorf("p1 image judged after p1: %v", d)
	}
	v, err := fsgen.Check(mnt, tr, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantDiff(t, v.Diffs, "A/foo", "data", fsgen.ClassOldContent)
	wantDiff(t, v.Diffs, "B/bar", "exists", fsgen.ClassFileMissing)
	if v.Class != fsgen.ClassFileMissing {
		t.Errorf("verdict class %s, want %s: %v", v.Class, fsgen.ClassFileMissing, v.Diffs)
	}
	for _, d := range v.Diffs {
		if d.Class == fsgen.ClassUnusable {
			t.Errorf("p1 image unusable: %v", d)
		}
	}
	release()

	// Garbage in the overwritten block of A/foo.
	end := tr.States[len(tr.States)-1].Tree["A/foo"]
	block := end.Data[4096:8192]
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	at := -1
	for off := 0; off+4096 <= len(raw); off += 512 { // small ext4 uses 1 KiB blocks
		if bytes.Equal(raw[off:off+4096], block) {
			at = off
			break
		}
	}
	if at < 0 {
		t.Fatal("the overwritten block of A/foo is not in the image")
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x7f}, 512), int64(at)+512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mnt, release = mountImage(t, img, "ext4")
	v, err = fsgen.Check(mnt, tr, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantDiff(t, v.Diffs, "A/foo", "data", fsgen.ClassDataCorrupted)
	if len(v.Diffs) != 1 {
		t.Errorf("want only the data diff, have %v", v.Diffs)
	}
	release()
}

// TestSeq1CleanRemount runs the whole seq-1 set on ext4, xfs and btrfs (each workload in its own
// directory of one file system), unmounts, mounts again and checks every workload after its last
// persistence point: without a crash, every promise must hold, so any difference is an oracle
// false positive (a field compared that the file system legitimately changes across a remount).
func TestSeq1CleanRemount(t *testing.T) {
	testenv.RequireLoop(t)
	if testing.Short() {
		t.Skip("skipping: runs the seq-1 set three times")
	}
	ws, _ := fsgen.Generate(1, fsgen.Options{})
	for _, fs := range []struct {
		name string
		size int64
		mkfs []string
	}{
		{"ext4", 128 << 20, []string{"mkfs.ext4", "-F", "-q"}},
		{"xfs", 320 << 20, []string{"mkfs.xfs", "-f", "-q"}},
		{"btrfs", 256 << 20, []string{"mkfs.btrfs", "-f", "-q"}},
	} {
		t.Run(fs.name, func(t *testing.T) {
			testenv.RequireTool(t, fs.mkfs[0])
			img := filepath.Join(t.TempDir(), fs.name+".img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, fs.size); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(fs.mkfs[0], append(fs.mkfs[1:], img)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", fs.mkfs[0], err, out)
			}
			g, err := fsgen.GuaranteesFor(fs.name)
			if err != nil {
				t.Fatal(err)
			}
			mnt, release := mountImage(t, img, fs.name)
			traces := make([]*fsgen.Trace, len(ws))
			for i, w := range ws {
				d := filepath.Join(mnt, "w"+strconv.Itoa(i))
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if traces[i], err = fsgen.Run(context.Background(), w, d, fsgen.ExecOptions{Guarantees: g}); err != nil {
					t.Fatalf("%s on %s: %v", w.ID(), fs.name, err)
				}
			}
			release()
			mnt, release = mountImage(t, img, fs.name)
			defer release()
			bad := 0
			for i, w := range ws {
				d := compare(t, filepath.Join(mnt, "w"+strconv.Itoa(i)), traces[i], len(traces[i].Points))
				if len(d) != 0 {
					bad++
					if bad <= 10 {
						t.Errorf("%s: %v", w.ID(), d)
					}
				}
			}
			t.Logf("%s: %d seq-1 workloads, %d with differences after a clean remount", fs.name, len(ws), bad)
		})
	}
}
