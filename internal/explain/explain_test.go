package explain

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/powercut/powercut/internal/testenv"
)

// mkfsWithFile makes an image of fs holding /d/b.bin (40 KiB), by mounting it on a loop device.
func mkfsWithFile(t *testing.T, fs string, size int64, mkfs ...string) string {
	t.Helper()
	testenv.RequireLoop(t)
	testenv.RequireTool(t, mkfs[0])
	dir := t.TempDir()
	img := filepath.Join(dir, fs+".img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", mkfs, err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	os.Mkdir(filepath.Join(mnt, "d"), 0o755)
	data := make([]byte, 40<<10)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	werr := os.WriteFile(filepath.Join(mnt, "d", "b.bin"), data, 0o644)
	exec.Command("sync").Run()
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	return img
}

func where(t *testing.T, fs, img string, off, n int64) string {
	t.Helper()
	s, err := Where(context.Background(), fs, img, off, n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExt4(t *testing.T) {
	testenv.RequireTool(t, "debugfs", "dumpe2fs")
	img := mkfsWithFile(t, "ext4", 64<<20, "mkfs.ext4", "-q", "-F", "-b", "4096")
	out, err := exec.Command("debugfs", "-R", "blocks /d/b.bin", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	first, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if s := where(t, "ext4", img, first*4096, 4096); !strings.Contains(s, "data of /d/b.bin") {
		t.Errorf("file block %d: %q", first, s)
	}
	if s := where(t, "ext4", img, 1024, 1024); !strings.Contains(s, "superblock") {
		t.Errorf("superblock: %q", s)
	}
	out, _ = exec.Command("debugfs", "-R", "blocks <8>", img).Output()
	jb, _ := strconv.ParseInt(strings.Fields(string(out))[2], 10, 64)
	if s := where(t, "ext4", img, jb*4096, 4096); s != "ext4 journal (journal block 2)" {
		t.Errorf("journal block %d: %q", jb, s)
	}
}

func TestXFS(t *testing.T) {
	testenv.RequireTool(t, "xfs_db")
	img := mkfsWithFile(t, "xfs", 300<<20, "mkfs.xfs", "-q", "-f")
	if s := where(t, "xfs", img, 0, 512); s != "xfs superblock" {
		t.Errorf("block 0: %q", s)
	}
	out, err := exec.Command("xfs_db", "-r", "-c", "blockget -n", "-c", "ncheck", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ino string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == "d/b.bin" {
			ino = f[0]
		}
	}
	out, err = exec.Command("xfs_db", "-r", "-c", "inode "+ino, "-c", "bmap", img).Output()
	if err != nil || !strings.Contains(string(out), "startblock") {
		t.Fatalf("bmap of inode %s: %v %s", ino, err, out)
	}
	fsb := strings.Fields(strings.SplitN(string(out), "startblock ", 2)[1])[0]
	out, _ = exec.Command("xfs_db", "-r", "-c", "convert fsblock "+fsb+" daddr", img).Output()
	d, _ := strconv.ParseInt(strings.Trim(strings.Fields(string(out))[1], "()"), 10, 64)
	if s := where(t, "xfs", img, d*512, 4096); !strings.Contains(s, "data of d/b.bin") {
		t.Errorf("daddr %d: %q", d, s)
	}
}

func TestBtrfs(t *testing.T) {
	testenv.RequireTool(t, "btrfs")
	img := mkfsWithFile(t, "btrfs", 200<<20, "mkfs.btrfs", "-q", "-f")
	if s := where(t, "btrfs", img, 64<<10, 4096); s != "btrfs superblock" {
		t.Errorf("64 KiB: %q", s)
	}
	if s := where(t, "btrfs", img, 190<<20, 4096); !strings.Contains(s, "btrfs") {
		t.Errorf("190 MiB: %q", s)
	}
	if _, err := Where(context.Background(), "zfs", img, 0, 1); err == nil {
		t.Error("zfs explained")
	}
}
