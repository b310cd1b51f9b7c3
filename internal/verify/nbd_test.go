package verify

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/nbd"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

func TestCleanRunNbdkit(t *testing.T) {
	testenv.RequireTool(t, "nbdkit")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command("nbdkit", "-U", sock, "-f", "--exit-with-parent", "memory", "4M")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The socket file appears before nbdkit accepts on it: retry the connection, bounded.
	var (
		tgt     Target
		name    string
		closeFn func() error
		err     error
	)
	for i := 0; i < 500; i++ {
		if tgt, name, closeFn, err = OpenTarget("nbd+unix:///?socket="+sock, TargetOptions{}); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	res, err := Run(context.Background(), tgt, Config{Mode: "randrwt", Mix: &Mix{R: 40, W: 40, T: 10, Z: 10}, Ops: 5000, IODepth: 16,
		Seed: 1, FsyncEvery: 64, TrimZeroes: true, VerifyAll: true, DumpName: name})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 0 {
		t.Fatalf("clean NBD run failed: %v", details(res))
	}
	if res.Reads == 0 || res.Writes == 0 || res.Trims == 0 || res.Zeroes == 0 || res.Flushes == 0 {
		t.Fatalf("not every operation ran: %+v", res)
	}
	// The same target with a block rolled back behind the client's back is caught.
	ft := NewFaultTarget(tgt, Fault{Kind: FaultLostWrite, Offset: 7 * tbs, After: 1})
	res, err = Run(context.Background(), ft, Config{Mode: "write", Ops: 2 * 1024, IODepth: 4, VerifyAll: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 1 || res.Failures[0].Detail != "stale: holds version 1 of 2" {
		t.Fatalf("lost write over NBD: %v", details(res))
	}
}

// TestRecordNBD runs the workload as an NBD client of powercut's own recording server, then
// explores the recording with the verify checker.
func TestRecordNBD(t *testing.T) {
	dir := t.TempDir()
	logPath, track := filepath.Join(dir, "n.pclog"), filepath.Join(dir, "n.track")
	const size = 64 * tbs
	rec, err := record.Create(logPath, pclog.Header{Source: "nbd", Devices: []pclog.Device{{ID: 0, Name: "disk", Size: size, SectorSize: 512}}},
		[]record.Store{record.NewMemStore(size)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbd.NewServer(nbd.RecordedExport("disk", "verify test", rec.Device(0)))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	tgt, _, closeFn, err := OpenTarget("nbd+unix:///disk?socket="+sock, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), tgt, Config{Mode: "randrw", Ops: 300, IODepth: 8, Seed: 2, FsyncEvery: 16, TrackFile: track, VerifyAll: true})
	closeFn()
	cancel()
	if serr := <-done; serr != nil {
		t.Fatal(serr)
	}
	if err != nil || res.FailureCount != 0 {
		t.Fatalf("%v %v", err, details(res))
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []model.Model{model.Flush, model.Reorder} {
		rep := exploreLog(t, logPath, track, m)
		if len(rep.Violations) != 0 {
			t.Fatalf("model %s: %+v", m, rep.Violations[0])
		}
		t.Logf("model %s: %d states checked, no violation", m, rep.Checked)
	}
}
