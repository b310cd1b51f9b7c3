package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// crashMem is a memTarget with a durable copy: Flush persists what was written before it; crash
// leaves each block at its durable or its latest content (both legal after a power cut).
type crashMem struct {
	memTarget
	dmu sync.Mutex
	dur []byte
}

func newCrashMem(size int) *crashMem {
	return &crashMem{memTarget: memTarget{b: make([]byte, size)}, dur: make([]byte, size)}
}

func (c *crashMem) Flush() error {
	c.mu.Lock()
	snap := append([]byte(nil), c.b...)
	c.mu.Unlock()
	c.dmu.Lock()
	c.dur = snap
	c.dmu.Unlock()
	return nil
}

// crash keeps the latest content of every block whose index has bit pick set, else the durable.
func (c *crashMem) crash(pick func(b int) bool) {
	for b := 0; b*tbs < len(c.b); b++ {
		if !pick(b) {
			copy(c.b[b*tbs:(b+1)*tbs], c.dur[b*tbs:(b+1)*tbs])
		}
	}
}

func TestPolicyFlushed(t *testing.T) {
	dir := t.TempDir()
	track := filepath.Join(dir, "c.track")
	c := newCrashMem(32 * tbs)
	// Workload with a flush every 8 writes; the "power cut" comes right after it (no final flush).
	res, err := Run(context.Background(), c, Config{Mode: "randwrite", Ops: 205, Seed: 5, FsyncEvery: 8, TrackFile: track, NoFinalFlush: true})
	if err != nil || res.FailureCount != 0 {
		t.Fatalf("%v %v", err, details(res))
	}
	if res.Flushes != 200/8 {
		t.Fatalf("%d flushes, want %d", res.Flushes, 200/8)
	}
	c.crash(func(b int) bool { return false })
	saved, _ := os.ReadFile(track)

	// Under --policy completed the lost unflushed writes are reported as stale.
	res, err = Run(context.Background(), c, Config{Mode: "read", TrackFile: track, Policy: PolicyCompleted})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount == 0 {
		t.Fatal("policy completed accepted blocks that lost unflushed writes")
	}
	for _, f := range res.Failures {
		if f.Class != ClassStale {
			t.Fatalf("unexpected failure %s", f.Line())
		}
	}
	// Under --policy flushed the same image is fine.
	os.WriteFile(track, saved, 0o644)
	res, err = Run(context.Background(), c, Config{Mode: "read", TrackFile: track, Policy: PolicyFlushed})
	if err != nil || res.FailureCount != 0 {
		t.Fatalf("policy flushed: %v %v", err, details(res))
	}

	// A block rolled back to before its flushed version is stale even under --policy flushed.
	os.WriteFile(track, saved, 0o644)
	id, tab, err := loadTrack(track)
	if err != nil {
		t.Fatal(err)
	}
	victim := int64(-1)
	for i := int64(0); i < tab.len(); i++ {
		if w := tab.get(i); w.durable() >= 2 && w.kind() == kindData {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no block with a flushed version >= 2")
	}
	w := tab.get(victim)
	makeBlock(c.b[victim*tbs:(victim+1)*tbs], id.RunID, victim*tbs, w.durable()-1)
	res, err = Run(context.Background(), c, Config{Mode: "read", TrackFile: track, Policy: PolicyFlushed})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 1 || res.Failures[0].Offset != victim*tbs || !strings.Contains(res.Failures[0].Detail, "stale: holds version") {
		t.Fatalf("rollback under policy flushed: %v", details(res))
	}
	t.Log(res.Failures[0].Line())

	// After a clean write pass the next run expects exact versions again.
	os.Remove(track)
	if _, err := Run(context.Background(), c, Config{Mode: "write", TrackFile: track}); err != nil {
		t.Fatal(err)
	}
	res, err = Run(context.Background(), c, Config{Mode: "read", TrackFile: track, Policy: PolicyFlushed})
	if err != nil || res.FailureCount != 0 {
		t.Fatalf("%v %v", err, details(res))
	}
}

// TestWordFlushed checks the per-block window arithmetic directly.
func TestWordFlushed(t *testing.T) {
	var w Word
	w = w.advance(1, kindData, true)
	w = w.advance(2, kindZeroes, true)
	w = w.flushed(2, kindZeroes) // zeroes durable
	w = w.advance(3, kindData, true)
	w = w.advance(4, kindData, true)
	w |= bitU
	e := expectFor(w, false)
	if e.lo != 2 || e.hi != 4 || !e.zeros || e.foreign {
		t.Fatalf("window after flushed zeroes: %+v", e)
	}
	w = w.flushed(4, kindData)
	e = expectFor(w, false)
	if e.lo != 4 || e.hi != 4 || e.zeros {
		t.Fatalf("window after everything flushed: %+v (word %x)", e, uint64(w))
	}
}
