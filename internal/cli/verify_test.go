package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/powercut/powercut/internal/verify"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

func runVerifyCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerifyCLI(t *testing.T) {
	dir := t.TempDir()
	img, track, dumps := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk.track"), filepath.Join(dir, "dumps")
	code, out, errs := runVerifyCLI(t, "verify", "--target", img, "--size", "1M", "--rw", "randrw", "--iodepth", "4", "--ops", "2000",
		"--fsync-every", "32", "--track", track)
	if code != 0 {
		t.Fatalf("clean run: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "tracking: 8 bytes per block") {
		t.Fatalf("output: %s", out)
	}
	// Write one more pass so every block has a version, then roll block 3 back.
	if code, out, errs = runVerifyCLI(t, "verify", "--target", img, "--size", "1M", "--rw", "write", "--track", track, "--track-required"); code != 0 {
		t.Fatalf("write pass: exit %d\n%s%s", code, out, errs)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 4096)
	f.ReadAt(blk, 3*4096)
	// Same block, one version older: swap in block 3's content as written by a run over a copy.
	f.Close()
	if code, out, errs = runVerifyCLI(t, "verify", "--target", img, "--size", "1M", "--rw", "write", "--track", track, "--track-required"); code != 0 {
		t.Fatalf("second write pass: exit %d\n%s%s", code, out, errs)
	}
	f, _ = os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt(blk, 3*4096)
	f.Close()
	code, out, errs = runVerifyCLI(t, "verify", "--target", img, "--size", "1M", "--rw", "read", "--track", track, "--track-required", "--dump-dir", dumps)
	if code != 1 {
		t.Fatalf("rolled-back block: exit %d, want 1\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "block 0x3000: stale: holds version") {
		t.Fatalf("no classification line:\n%s", out)
	}
	for _, ext := range []string{"received", "expected", "complete"} {
		if _, err := os.Stat(filepath.Join(dumps, "disk.img.12288."+ext)); err != nil {
			t.Fatalf("dump: %v", err)
		}
	}
	// JSON output of the same check.
	code, out, _ = runVerifyCLI(t, "verify", "--target", img, "--size", "1M", "--rw", "read", "--track", track, "--json")
	var res struct {
		FailureCount int `json:"failure_count"`
		Failures     []struct {
			Offset int64  `json:"offset"`
			Class  string `json:"class"`
		} `json:"failures"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.FailureCount != 1 || res.Failures[0].Class != "stale" || res.Failures[0].Offset != 3*4096 {
		t.Fatalf("json: exit %d, %v, %+v\n%s", code, err, res, out)
	}
}

func TestVerifyCLIUsage(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	for _, args := range [][]string{
		{"verify"},
		{"verify", "--target", img, "--size", "1M", "--rw", "sideways"},
		{"verify", "--target", img, "--size", "1M", "--mix", "50,20,10"},
		{"verify", "--target", img, "--size", "1M", "--policy", "hopeful"},
		{"verify", "--target", img, "--size", "1M", "--ops", "5", "--runtime", "1s"},
		{"verify", "--target", img, "--size", "1M", "--track", filepath.Join(dir, "none"), "--track-required"},
		{"verify", "--target", filepath.Join(dir, "missing.img")},
	} {
		if code, out, errs := runVerifyCLI(t, args...); code != 2 || errs == "" {
			t.Fatalf("%v: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
}

// TestExploreVerify runs a verify workload through an in-process recorder and explores the
// recording with explore --verify: clean for a correct device, exit 1 for one that acknowledges
// FLUSH without performing it.
func TestExploreVerify(t *testing.T) {
	for _, lie := range []bool{false, true} {
		dir := t.TempDir()
		logPath, track := filepath.Join(dir, "v.pclog"), filepath.Join(dir, "v.track")
		const size = 32 * 4096
		rec, err := record.Create(logPath, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: size, SectorSize: 512}}},
			[]record.Store{record.NewMemStore(size)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := verify.Run(context.Background(), &verify.RecordTarget{Dev: rec.Device(0), LieAboutFlush: lie},
			verify.Config{Mode: "randrw", Ops: 150, IODepth: 4, FsyncEvery: 8, TrackFile: track})
		if err != nil || res.FailureCount != 0 {
			t.Fatalf("workload: %v %+v", err, res)
		}
		rec.Close()
		code, out, errs := runVerifyCLI(t, "explore", "--log", logPath, "--verify", track, "--model", "reorder", "--k", "1")
		want := map[bool]int{false: 0, true: 1}[lie]
		if code != want {
			t.Fatalf("lie=%v: exit %d, want %d\n%s%s", lie, code, want, out, errs)
		}
		if lie && !strings.Contains(out, "lost a flushed write") {
			t.Fatalf("lying device: output lacks the violation:\n%s", out)
		}
	}
}
