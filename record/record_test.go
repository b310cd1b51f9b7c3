package record

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

func newTestRecorder(t *testing.T, dir string) (*Recorder, string) {
	t.Helper()
	path := filepath.Join(dir, "t.pclog")
	r, err := Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: 1 << 20, SectorSize: 512}}}, []Store{NewMemStore(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

// Concurrent goroutines: every operation is recorded once, file order is completion order,
// submit precedes completion, and the store holds what was written.
func TestConcurrentRecording(t *testing.T) {
	r, path := newTestRecorder(t, t.TempDir())
	d := r.Device(0)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				off := int64(g*50+i) % 2048 * 512
				if err := d.WriteAt(bytes.Repeat([]byte{byte(g)}, 512), off, i%7 == 0); err != nil {
					t.Error(err)
				}
				if i%10 == 0 {
					if err := d.Flush(); err != nil {
						t.Error(err)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	if err := r.Mark("end"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if want := 8*50 + 8*5 + 1; len(l.Entries) != want {
		t.Fatalf("%d records, want %d", len(l.Entries), want)
	}
	seen := map[uint64]bool{}
	for i, e := range l.Entries {
		if e.Submit > e.Complete || seen[e.Submit] && e.Kind != pclog.KindMark || seen[e.Complete] {
			t.Fatalf("record %d: bad sequence numbers %+v", i, e)
		}
		seen[e.Submit], seen[e.Complete] = true, true
	}
}

// FailAfter: once the trigger fires every operation fails and nothing more is recorded.
func TestFailAfter(t *testing.T) {
	r, path := newTestRecorder(t, t.TempDir())
	d := r.Device(0)
	r.FailAfterMark("cut")
	if err := d.WriteAt(make([]byte, 512), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Mark("cut"); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(make([]byte, 512), 512, false); !errors.Is(err, ErrStopped) {
		t.Fatalf("write after the cut: %v, want ErrStopped", err)
	}
	if err := d.Flush(); !errors.Is(err, ErrStopped) {
		t.Fatalf("flush after the cut: %v", err)
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != 2 || l.Entries[1].Name != "cut" {
		t.Fatalf("log does not end at the trigger: %+v", l.Entries)
	}
}

// A full log file system fails the operation (never drops a record silently) and leaves the log
// a valid prefix holding every operation that succeeded.
func TestLogFullFailsOperation(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot mount a small tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	r, path := newTestRecorder(t, dir)
	d := r.Device(0)
	ok := 0
	var failed error
	for i := 0; i < 1000 && failed == nil; i++ {
		failed = d.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i%200)*4096, false)
		if failed == nil {
			ok++
		}
	}
	if failed == nil {
		t.Fatal("256 KiB log file system never filled")
	}
	if !errors.Is(failed, syscall.ENOSPC) {
		t.Fatalf("failed with %v, want ENOSPC", failed)
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatalf("log after ENOSPC is not valid: %v", err)
	}
	defer l.Close()
	if len(l.Entries) != ok || l.Torn != nil {
		t.Fatalf("log holds %d records (torn %v), %d writes succeeded", len(l.Entries), l.Torn, ok)
	}
	t.Logf("%d writes recorded before ENOSPC: %v", ok, failed)
}
