package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// memTarget is an in-memory Target whose trims zero the range.
type memTarget struct {
	mu      sync.Mutex
	b       []byte
	flushes int
}

func newMem(size int) *memTarget { return &memTarget{b: make([]byte, size)} }

func (m *memTarget) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}
func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}
func (m *memTarget) Trim(off, n int64) error { return m.WriteZeroes(off, n) }
func (m *memTarget) WriteZeroes(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.b[off : off+n])
	return nil
}
func (m *memTarget) Flush() error {
	m.mu.Lock()
	m.flushes++
	m.mu.Unlock()
	return nil
}
func (m *memTarget) Size() int64 { return int64(len(m.b)) }

const tbs = 4096

// twoPasses writes every block twice (versions 1 and 2) sequentially, then verifies every block.
func twoPasses(t *testing.T, tgt Target, dump string) *Result {
	t.Helper()
	res, err := Run(context.Background(), tgt, Config{Mode: "write", Ops: 2 * (tgt.Size() / tbs), IODepth: 1,
		VerifyAll: true, DumpDir: dump, DumpName: "mem", RunID: 0x1234})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func details(res *Result) []string {
	var s []string
	for _, f := range res.Failures {
		s = append(s, f.Line())
	}
	return s
}

func TestCleanRun(t *testing.T) {
	for _, mode := range Modes {
		t.Run(mode, func(t *testing.T) {
			m := newMem(64 * tbs)
			res, err := Run(context.Background(), m, Config{Mode: mode, Ops: 2000, IODepth: 8, Seed: 7, FsyncEvery: 16, VerifyAll: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.FailureCount != 0 {
				t.Fatalf("clean run reported failures: %v", details(res))
			}
			if res.Reads+res.Writes+res.Trims+res.Zeroes < 2000 {
				t.Fatalf("ran %d+%d+%d+%d ops, want 2000", res.Reads, res.Writes, res.Trims, res.Zeroes)
			}
		})
	}
}

func TestFaultClasses(t *testing.T) {
	b3 := int64(3 * tbs)
	cases := []struct {
		name  string
		fault Fault
		want  map[int64]string // block offset -> expected detail
		class string
	}{
		{"stale", Fault{Kind: FaultLostWrite, Offset: b3, After: 1},
			map[int64]string{b3: "stale: holds version 1 of 2"}, ClassStale},
		{"misdirect", Fault{Kind: FaultMisdirect, Offset: b3, After: 1, MisdirectTo: tbs},
			map[int64]string{tbs: "misdirected: written for offset 0x3000 (version 2)", b3: "stale: holds version 1 of 2"}, ClassMisdirected},
		{"tear", Fault{Kind: FaultTear, Offset: b3, After: 1, TearSector: 5},
			map[int64]string{b3: "torn at sector 5 between versions 2 and 1"}, ClassTorn},
		{"garbage", Fault{Kind: FaultGarbage, Offset: b3, After: 1},
			map[int64]string{b3: "corrupt: no valid block header (expected version 2)"}, ClassCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMem(8 * tbs)
			ft := NewFaultTarget(m, c.fault)
			dir := t.TempDir()
			res := twoPasses(t, ft, dir)
			if ft.Fired() != 1 {
				t.Fatalf("fault did not fire")
			}
			got := map[int64]string{}
			for _, f := range res.Failures {
				got[f.Offset] = f.Detail
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("failures %v, want %v", got, c.want)
			}
			checkDumps(t, dir, m, b3, res)
		})
	}
}

// checkDumps checks the three dump files of the block at off.
func checkDumps(t *testing.T, dir string, m *memTarget, off int64, res *Result) {
	t.Helper()
	base := filepath.Join(dir, fmt.Sprintf("mem.%d", off))
	rec, err := os.ReadFile(base + ".received")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec, m.b[off:off+tbs]) {
		t.Fatalf(".received differs from the block on the target")
	}
	exp, err := os.ReadFile(base + ".expected")
	if err != nil {
		t.Fatal(err)
	}
	h, ok := intact(exp)
	if !ok || h.offset != uint64(off) {
		t.Fatalf(".expected is not an intact block for 0x%x: %+v", off, h)
	}
	comp, err := os.ReadFile(base + ".complete")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Failures {
		if f.Offset == off && !strings.Contains(string(comp), f.Detail) {
			t.Fatalf(".complete lacks the classification %q:\n%s", f.Detail, comp)
		}
	}
}

func TestLostZeroes(t *testing.T) {
	m := newMem(8 * tbs)
	track := filepath.Join(t.TempDir(), "t.track")
	if _, err := Run(context.Background(), m, Config{Mode: "write", TrackFile: track, RunID: 9}); err != nil {
		t.Fatal(err)
	}
	b3 := int64(3 * tbs)
	ft := NewFaultTarget(m, Fault{Kind: FaultIgnoreZeroes, Offset: b3})
	dir := t.TempDir()
	res, err := Run(context.Background(), ft, Config{Mode: "write", Mix: &Mix{Z: 100}, TrackFile: track, TrackRequired: true,
		VerifyAll: true, DumpDir: dir, DumpName: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 1 || res.Failures[0].Offset != b3 || res.Failures[0].Detail != "lost zeroes: holds version 1 of 2, but version 2 zeroed it" {
		t.Fatalf("failures %q", details(res))
	}
	exp, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("mem.%d.expected", b3)))
	if len(exp) != tbs || !isZero(exp) {
		t.Fatalf(".expected of a zeroed block should be %d zero bytes", tbs)
	}

	// A trim only owes zeros with --trim-zeroes.
	m2 := newMem(8 * tbs)
	for _, tz := range []bool{false, true} {
		track2 := filepath.Join(t.TempDir(), "t.track")
		if _, err := Run(context.Background(), m2, Config{Mode: "write", TrackFile: track2, RunID: 10}); err != nil {
			t.Fatal(err)
		}
		ft := NewFaultTarget(m2, Fault{Kind: FaultIgnoreZeroes, Offset: b3})
		res, err := Run(context.Background(), ft, Config{Mode: "trim", TrackFile: track2, TrimZeroes: tz, VerifyAll: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int64{false: 0, true: 1}[tz]; res.FailureCount != want {
			t.Fatalf("trim-zeroes=%v: %d failures %q, want %d", tz, res.FailureCount, details(res), want)
		}
	}
}

func TestTrackAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	track := filepath.Join(dir, "disk.track")
	ft, err := OpenFile(path, TargetOptions{Create: true, CreateSize: 32 * tbs})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), ft, Config{Mode: "randwrite", Ops: 300, IODepth: 4, Seed: 3, TrackFile: track})
	ft.Close()
	if err != nil || res.FailureCount != 0 || !res.TrackSaved {
		t.Fatalf("write run: %v %+v", err, res)
	}
	// Save block 5's current content, write it again (new version), then roll it back.
	ft, _ = OpenFile(path, TargetOptions{})
	old := make([]byte, tbs)
	ft.ReadAt(old, 5*tbs)
	ft.Close()
	res, err = Run(context.Background(), mustOpen(t, path), Config{Mode: "randwrite", Ops: 300, Seed: 4, TrackFile: track, TrackRequired: true})
	if err != nil || res.FailureCount != 0 {
		t.Fatalf("second write run: %v %v", err, details(res))
	}
	if _, err := os.Stat(track); err != nil {
		t.Fatalf("track file not saved at the clean end: %v", err)
	}
	h, _ := intact(old)
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt(old, 5*tbs)
	f.Close()

	res, err = Run(context.Background(), mustOpen(t, path), Config{Mode: "read", TrackFile: track, TrackRequired: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 1 || res.Failures[0].Offset != 5*tbs || !strings.HasPrefix(res.Failures[0].Detail, fmt.Sprintf("stale: holds version %d of ", h.version)) {
		t.Fatalf("rolled-back block not caught: %q", details(res))
	}
	// The track file was consumed and rewritten; an identity mismatch names the file.
	_, err = Run(context.Background(), mustOpen(t, path), Config{Mode: "read", BlockSize: 8192, TrackFile: track})
	if err == nil || !strings.Contains(err.Error(), track) || !strings.Contains(err.Error(), "block size 4096") {
		t.Fatalf("mismatched identity: %v", err)
	}
	os.Remove(track)
	_, err = Run(context.Background(), mustOpen(t, path), Config{Mode: "read", TrackFile: track, TrackRequired: true})
	if !errors.Is(err, ErrNoTrack) {
		t.Fatalf("--track-required without the file: %v", err)
	}
}

func mustOpen(t *testing.T, path string) *FileTarget {
	t.Helper()
	ft, err := OpenFile(path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ft.Close() })
	return ft
}

func TestTrackFileChecksum(t *testing.T) {
	dir := t.TempDir()
	track := filepath.Join(dir, "x.track")
	m := newMem(8 * tbs)
	if _, err := Run(context.Background(), m, Config{Mode: "write", TrackFile: track}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(track)
	b[len(b)-10] ^= 1
	os.WriteFile(track, b, 0o644)
	_, err := Run(context.Background(), m, Config{Mode: "read", TrackFile: track})
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), track) {
		t.Fatalf("damaged track file: %v", err)
	}
}
