package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// The README's FUSE recipe works as written: its `powercut record fuse` command serves
// DIR/disk.img, its `losetup` line (run as is, DIR replaced) prints the loop device, and a write
// plus fsync through that device is recorded.
func TestReadmeFuseLosetupLine(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	testenv.RequireLoop(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.Contains(line, "`powercut record fuse") {
			row = line
			break
		}
	}
	cmds := regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(row, -1)
	if len(cmds) < 2 || !strings.HasPrefix(cmds[1][1], "losetup ") {
		t.Fatalf("README: no `powercut record fuse ...` then `losetup ...` row:\n%s", row)
	}
	dir := t.TempDir()
	mnt, logPath := filepath.Join(dir, "mnt"), filepath.Join(dir, "f.pclog")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	subst := strings.NewReplacer("DIR", mnt, "F.pclog", logPath, " N ", " 4M ", "[--base IMG]", "")
	rec := strings.Fields(subst.Replace(cmds[0][1]))
	if rec[0] != "powercut" {
		t.Fatalf("README recording command %q", cmds[0][1])
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() { code <- Run(ctx, rec[1:], &out, &errb) }()
	// On any failure, stop the recorder (it unmounts) before the temporary directory goes.
	exited := false
	wait := func() int {
		cancel()
		if !exited {
			exited = true
			return <-code
		}
		return ExitOK
	}
	t.Cleanup(func() { wait() })
	img := filepath.Join(mnt, "disk.img")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(img); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: no %s after 10s; stderr: %s", rec, img, errb.String())
		}
	}
	lo := strings.Fields(subst.Replace(cmds[1][1]))
	b, err := exec.Command(lo[0], lo[1:]...).CombinedOutput()
	dev := strings.TrimSpace(string(b))
	if err != nil || !regexp.MustCompile(`^/dev/loop\d+$`).MatchString(dev) {
		t.Fatalf("the README's line %q: %v\n%s", strings.Join(lo, " "), err, b)
	}
	detached := false
	detach := func() {
		if !detached {
			detached = true
			if b, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v\n%s", dev, err, b)
			}
		}
	}
	defer detach()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	detach()
	if c := wait(); c != ExitOK {
		t.Fatalf("record fuse: exit %d\n%s%s", c, out.String(), errb.String())
	}
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wrote bool
	for _, e := range l.Entries {
		wrote = wrote || (e.Kind == pclog.KindWrite && e.Offset <= 8192 && e.Offset+int64(e.Length) >= 8192+4096)
	}
	if !wrote {
		t.Errorf("the write through %s was not recorded: %d records", dev, len(l.Entries))
	}
}
