package explore

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

const devSize = 64 << 10

// gateStore blocks chosen operations until released, so tests can force exact interleavings of
// submit and completion through the real recording API.
type gateStore struct {
	*record.MemStore
	mu    sync.Mutex
	gates map[string]chan struct{}
}

func newGateStore() *gateStore {
	return &gateStore{MemStore: record.NewMemStore(devSize), gates: map[string]chan struct{}{}}
}

func (g *gateStore) gate(name string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[name]
	if !ok {
		c = make(chan struct{})
		g.gates[name] = c
	}
	return c
}

// block arms a gate: the next matching operation waits until open(name).
func (g *gateStore) wait(name string) {
	g.mu.Lock()
	c, ok := g.gates[name]
	g.mu.Unlock()
	if ok {
		<-c
	}
}

func (g *gateStore) WriteAt(p []byte, off int64) (int, error) {
	g.wait(fmt.Sprintf("write@%d", off))
	return g.MemStore.WriteAt(p, off)
}

func (g *gateStore) Sync() error {
	g.wait("sync")
	return g.MemStore.Sync()
}

func newRec(t *testing.T, st record.Store) (*record.Recorder, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.pclog")
	r, err := record.Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: devSize, SectorSize: 512}}}, []record.Store{st})
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// statesOf explores exhaustively and returns, per state, the 512 bytes at off of device 0.
func statesOf(t *testing.T, path string, m model.Model, off int64) map[string][]byte {
	t.Helper()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := map[string][]byte{}
	chk := checkFunc(func(c *Candidate) []Violation {
		buf := make([]byte, 512)
		if _, err := c.Images[0].ReadAt(buf, off); err != nil {
			t.Error(err)
		}
		got[c.ID] = buf
		return nil
	})
	if _, err := Explore(context.Background(), Source{Log: l}, Options{Model: m, Strategy: "exhaustive"}, chk, nil); err != nil {
		t.Fatal(err)
	}
	return got
}

type checkFunc func(c *Candidate) []Violation

func (f checkFunc) Check(_ context.Context, c *Candidate) ([]Violation, error) { return f(c), nil }

// (a) A write that completes after a flush was submitted is not covered by that flush: some
// reorder state lacks it even though the flush completed (the loop-device case).
func TestInFlightWriteNotCoveredByFlush(t *testing.T) {
	g := newGateStore()
	r, path := newRec(t, g)
	dev := r.Device(0)
	wGate := g.gate("write@4096")
	sGate := g.gate("sync")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = dev.WriteAt(fill(0xAA, 512), 4096, false) }() // submit W
	waitSubmits(r, 1)
	go func() { defer wg.Done(); _ = dev.Flush() }() // submit F while W is in flight
	// Let both be submitted: W blocks in WriteAt, F in Sync.
	waitSubmits(r, 2)
	close(wGate) // W completes after F was submitted
	waitRecords(t, r, 1)
	close(sGate) // F completes
	wg.Wait()
	if err := r.Mark("after-flush"); err != nil {
		t.Fatal(err)
	}
	r.Close()

	states := statesOf(t, path, model.Reorder, 4096)
	missing := false
	for id, b := range states {
		if b[0] == 0 && stateAfterOp(t, path, id, 1) {
			missing = true
			t.Logf("state %s lacks the in-flight write", id)
		}
	}
	if !missing {
		t.Fatalf("every reorder state holds a write that completed after the flush was submitted: %v", states)
	}
	// The recording really shows the interleaving: W submitted, F submitted, W completed,
	// F completed.
	l, _ := pclog.Open(path)
	defer l.Close()
	e := l.Entries
	if !(e[0].Kind == pclog.KindWrite && e[1].Kind == pclog.KindFlush && e[0].Submit < e[1].Submit && e[0].Complete > e[1].Submit && e[0].Complete < e[1].Complete) {
		t.Fatalf("recording does not show the interleaving: %+v", e)
	}
}

// waitSubmits spins until n sequence numbers were handed out.
func waitSubmits(r *record.Recorder, n uint64) {
	for r.Seq() < n {
		runtimeGosched()
	}
}

func waitRecords(t *testing.T, r *record.Recorder, n uint64) {
	t.Helper()
	for r.Records() < n {
		runtimeGosched()
	}
}

// (b) A completed FUA write is present in every state.
func TestFUAWritePresentEverywhere(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	must(t, dev.WriteAt(fill(1, 512), 0, false))
	must(t, dev.WriteAt(fill(2, 512), 512, true)) // FUA
	must(t, dev.WriteAt(fill(3, 512), 1024, false))
	must(t, r.Mark("m"))
	r.Close()
	for _, m := range []model.Model{model.Reorder, model.Torn, model.Coalesce} {
		n := 0
		for id, b := range statesOf(t, path, m, 512) {
			if !stateAfterFUA(t, path, id) {
				continue
			}
			n++
			if b[0] != 2 {
				t.Errorf("%s: state %s lacks the completed FUA write", m, id)
			}
		}
		if n < 2 {
			t.Errorf("%s: only %d states after the FUA write completed", m, n)
		}
	}
}

// stateAfterFUA reports whether the state's crash point is after the FUA write completed.
func stateAfterFUA(t *testing.T, path, id string) bool {
	l, _ := pclog.Open(path)
	defer l.Close()
	h, _ := model.FromLog(l)
	e, _, err := h.Resolve(id)
	if err != nil {
		t.Fatal(err)
	}
	return e.Point.T > l.Entries[1].Complete
}

// (c) A write completed before a completed flush's submission is present in every state after
// that flush.
func TestFlushedWritePresentEverywhere(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	must(t, dev.WriteAt(fill(7, 512), 2048, false))
	must(t, dev.Flush())
	must(t, r.Mark("flushed"))
	must(t, dev.WriteAt(fill(8, 512), 0, false))
	must(t, dev.WriteAt(fill(9, 512), 512, false))
	r.Close()
	n := 0
	for id, b := range statesOf(t, path, model.Reorder, 2048) {
		if !stateAfterOp(t, path, id, 1) {
			continue
		}
		n++
		if b[0] != 7 {
			t.Errorf("state %s lacks the flushed write", id)
		}
	}
	if n < 2 {
		t.Fatalf("only %d states after the flush", n)
	}
}

func stateAfterOp(t *testing.T, path, id string, op int) bool {
	l, _ := pclog.Open(path)
	defer l.Close()
	h, _ := model.FromLog(l)
	e, _, err := h.Resolve(id)
	if err != nil {
		t.Fatal(err)
	}
	return e.Point.T > l.Entries[op].Complete
}

// (d) Overlapping writes never resurrect a version older than a durable one.
func TestNoResurrection(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	must(t, dev.WriteAt(fill(1, 1024), 0, false)) // v1 over sectors 0-1
	must(t, dev.WriteAt(fill(2, 512), 0, true))   // v2 durable (FUA) over sector 0
	must(t, dev.WriteAt(fill(3, 512), 512, false))
	must(t, r.Mark("end"))
	r.Close()
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		n := 0
		for id, b := range statesOf(t, path, m, 0) {
			if !stateAfterOp(t, path, id, 1) {
				continue
			}
			n++
			if b[0] == 1 {
				t.Errorf("%s: state %s resurrects version 1 under durable version 2", m, id)
			}
		}
		if n < 2 {
			t.Errorf("%s: only %d states after the durable write", m, n)
		}
	}
}

// (d) with concurrency: v1 completes, v2 (FUA) is submitted after it while v3 is in flight
// across both; the crash after v2 completes may show v2 or v3 on the shared sector, never v1.
func TestNoResurrectionConcurrent(t *testing.T) {
	g := newGateStore()
	r, path := newRec(t, g)
	dev := r.Device(0)
	must(t, dev.WriteAt(fill(1, 512), 0, false)) // v1 completes first
	v3 := g.gate("write@0")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = dev.WriteAt(fill(3, 512), 0, false) }() // v3 in flight
	waitSubmits(r, 3)
	// v2 (FUA) cannot reach the gated store address: write it through the recorder directly.
	must(t, dev.Do(&pclog.Record{Kind: pclog.KindWrite, Flags: pclog.FlagFUA, Offset: 0, Length: 512, Data: fill(2, 512)}, nil))
	close(v3)
	wg.Wait()
	must(t, r.Mark("end"))
	r.Close()
	seen := map[byte]bool{}
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		for id, b := range statesOf(t, path, m, 0) {
			if !stateAfterOp(t, path, id, 1) {
				continue
			}
			seen[b[0]] = true
			if b[0] == 1 {
				t.Errorf("%s: state %s resurrects version 1 under durable version 2", m, id)
			}
		}
	}
	if !seen[2] || !seen[3] {
		t.Errorf("versions seen after the durable write: %v, want both 2 and 3 (concurrent, either may win)", seen)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// countingChecker counts its checks and declares what it reads.
type countingChecker struct {
	mu    sync.Mutex
	n     int
	reads Reads
}

func (c *countingChecker) Check(context.Context, *Candidate) ([]Violation, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return nil, nil
}

type declaring struct{ *countingChecker }

func (d declaring) Reads() Reads { return d.reads }

// A checker is run once per distinct (image, what it declares it reads): a write of the bytes
// already there changes the covered marks of a state without changing its image or its last
// mark, so a checker that reads only the last mark is not re-run on it, and one that reads only
// the image is run once per image.
func TestDedupByWhatTheCheckerReads(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	if err := dev.WriteAt(make([]byte, 512), 0, false); err != nil { // rewrites the zeros there
		t.Fatal(err)
	}
	if err := r.Mark("m1"); err != nil {
		t.Fatal(err)
	}
	if err := dev.WriteAt(fill(0xBB, 512), 512, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Mark("m2"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	run := func(chk Checker) *Report {
		rep, err := Explore(context.Background(), Source{Log: l}, Options{Model: model.Reorder, Strategy: model.Exhaustive}, chk, nil)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	counts := map[Reads]int{}
	for _, rd := range []Reads{ReadsMarks, ReadsLastMark, ReadsImage} {
		c := &countingChecker{}
		c.reads = rd
		rep := run(declaring{c})
		if rep.Checked != c.n {
			t.Errorf("%s: report says %d checked, checker ran %d times", rd, rep.Checked, c.n)
		}
		counts[rd] = c.n
	}
	undeclared := &countingChecker{}
	run(undeclared)
	t.Logf("checks: marks %d, last-mark %d, image %d, undeclared %d", counts[ReadsMarks], counts[ReadsLastMark], counts[ReadsImage], undeclared.n)
	if undeclared.n != counts[ReadsMarks] {
		t.Errorf("a checker that declares nothing ran %d times, want %d (as marks)", undeclared.n, counts[ReadsMarks])
	}
	if !(counts[ReadsImage] < counts[ReadsLastMark] && counts[ReadsLastMark] < counts[ReadsMarks]) {
		t.Errorf("checks per context: image %d, last-mark %d, marks %d: want strictly fewer the less a checker reads",
			counts[ReadsImage], counts[ReadsLastMark], counts[ReadsMarks])
	}
}

// An in-order log that commits its head with a FUA write (no FLUSH) is correct on an in-order
// device: under coalesce (and prefix) no crash state shows a head naming an entry that did not
// land (R8). Under reorder, which does not assume an in-order device, the same log is caught.
func TestInOrderLogWithFUAHead(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	const entries = 6
	for i := 1; i <= entries; i++ {
		if err := dev.WriteAt(fill(byte(i), 512), int64(i)*512, false); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 512)
		head[0] = byte(i) // the head names the last committed entry
		if err := dev.WriteAt(head, 0, true); err != nil {
			t.Fatal(err)
		}
		if err := r.Mark(fmt.Sprintf("commit-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	oracle := checkFunc(func(c *Candidate) []Violation {
		b := make([]byte, 512)
		if _, err := c.Images[0].ReadAt(b[:1], 0); err != nil {
			t.Error(err)
		}
		n := int(b[0])
		for i := 1; i <= n; i++ {
			if _, err := c.Images[0].ReadAt(b, int64(i)*512); err != nil {
				t.Error(err)
			}
			if b[0] != byte(i) {
				return []Violation{{Oracle: "log", Detail: fmt.Sprintf("head names entry %d, entry %d is missing", n, i)}}
			}
		}
		return nil
	})
	for _, c := range []struct {
		m    model.Model
		want bool
	}{{model.Coalesce, false}, {model.Prefix, false}, {model.Flush, false}, {model.Reorder, true}} {
		rep, err := Explore(context.Background(), Source{Log: l}, Options{Model: c.m, Strategy: model.Exhaustive}, oracle, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(rep.Violations) > 0; got != c.want || rep.Checked == 0 {
			t.Errorf("%s: %d violations in %d checked states, want violations %v: %v", c.m, len(rep.Violations), rep.Checked, c.want, rep.Violations)
		}
	}
}
