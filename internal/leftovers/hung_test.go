package leftovers

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The helper process of TestHungFUSEMountsNeverHang: it serves an empty FUSE file system named
// like powercut's scratch directories at the path read from stdin ("own": in a directory of
// its own leftovers.Dir), says where on stdout, and waits to be stopped.
func init() {
	if os.Getenv("LEFTOVERS_TEST_FUSE_HELPER") == "" {
		return
	}
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	point := strings.TrimSpace(line)
	if point == "own" {
		d, err := MkdirTemp("powercut-scratch-")
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		point = filepath.Join(d, "mnt")
	}
	if err := os.MkdirAll(point, 0o755); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	zero := time.Duration(0)
	srv, err := fs.Mount(point, &fs.Inode{}, &fs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{FsName: "powercut-scratch", Name: "powercut"}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(point)
	srv.Wait()
	os.Exit(0)
}

// hungServer starts a helper serving a FUSE mount at point ("own": in its own owner directory)
// and stops it (SIGSTOP): the mount is there, its server alive, and no request is answered.
func hungServer(t *testing.T, point string) (string, *exec.Cmd) {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "LEFTOVERS_TEST_FUSE_HELPER=1")
	c.Stdin = strings.NewReader(point + "\n")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	got := strings.TrimSpace(line)
	if !strings.HasPrefix(got, "/") {
		t.Fatalf("FUSE helper: %q", got)
	}
	t.Cleanup(func() { syscall.Unmount(got, syscall.MNT_DETACH) })
	if err := c.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	return got, c
}

func mounted(point string) bool {
	for _, m := range mounts() {
		if m.point == point {
			return true
		}
	}
	return false
}

// within runs f, failing the test if it has not returned after d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%s still running after %v: it waits on a FUSE mount that does not answer", what, d)
	}
}

// TestHungFUSEMountsNeverHang: FUSE mounts whose server is alive but answers nothing (stopped
// here; stuck in its own exit in the wild) must not hold a sweep or a run's Close: Close touches
// only its own directory, a sweep leaves a live owner's mount alone without waiting on it, and
// the mount of a dead owner is aborted (fusectl) and unmounted without a single request.
func TestHungFUSEMountsNeverHang(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mounts, the FUSE control file system)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	live, _ := hungServer(t, "own")
	deadDir := ownerDir(t, tmp, deadPID(t), "dead", "12345\n")
	dead, _ := hungServer(t, filepath.Join(deadDir, "powercut-scratch-1", "mnt"))

	// A run's own directory, closed: nothing else is looked at.
	if _, err := MkdirTemp("powercut-scratch-"); err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "Close", func() { Close() })
	if !mounted(live) || !mounted(dead) {
		t.Fatalf("Close touched another run's mounts (live %v, dead owner's %v)", mounted(live), mounted(dead))
	}

	var acts []Action
	within(t, 20*time.Second, "Sweep", func() {
		var err error
		if acts, err = Sweep(false); err != nil {
			t.Error(err)
		}
	})
	for _, a := range acts {
		t.Logf("%s", a)
		if a.Err != "" {
			t.Errorf("%s: %s", a, a.Err)
		}
	}
	if !mounted(live) {
		t.Error("the sweep unmounted a live owner's mount")
	}
	if mounted(dead) {
		t.Error("the dead owner's mount is still there")
	}
	if _, err := os.Stat(deadDir); !os.IsNotExist(err) {
		t.Errorf("the dead owner's directory is still there (%v)", err)
	}
}
