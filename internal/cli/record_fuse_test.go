package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/control"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

func TestRecordFuseCLI(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	mnt, logPath, sock := filepath.Join(dir, "mnt"), filepath.Join(dir, "r.pclog"), filepath.Join(dir, "ctl")
	os.Mkdir(mnt, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"record", "fuse", "--mount", mnt, "--size", "1M", "--log", logPath, "--control", sock}, &out, &errb)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control socket never appeared; stderr: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f, err := os.OpenFile(filepath.Join(mnt, "disk.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := control.Mark(sock, "after-write"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d, stderr: %s", c, errb.String())
	}
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var kinds []string
	for _, e := range l.Entries {
		kinds = append(kinds, e.Kind.String()+":"+e.Name)
	}
	if got := strings.Join(kinds, " "); got != "WRITE: MARK:after-write FLUSH:" {
		t.Fatalf("entries %s", got)
	}
	if b, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(b), mnt) {
		t.Fatal("mount left behind")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("control socket left behind")
	}
}
