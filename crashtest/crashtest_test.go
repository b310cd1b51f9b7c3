package crashtest_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/powercut/powercut/crashtest"
	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// captureTB is a testing.TB whose Errorf and Fatalf are captured instead of failing the real
// test: it proves that Run reports what it should. Everything else (TempDir, Cleanup, Logf,
// Name) goes to the real test.
type captureTB struct {
	testing.TB
	mu     sync.Mutex
	errs   []string
	fatals []string
}

type fatalPanic struct{}

func (c *captureTB) Helper() {}
func (c *captureTB) Errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}
func (c *captureTB) Fatalf(format string, args ...any) {
	c.mu.Lock()
	c.fatals = append(c.fatals, fmt.Sprintf(format, args...))
	c.mu.Unlock()
	panic(fatalPanic{})
}

// capture runs f with a captureTB, stopping at its first Fatalf as a real test would.
func capture(t *testing.T, f func(tb testing.TB)) *captureTB {
	t.Helper()
	c := &captureTB{TB: t}
	func() {
		defer func() {
			if p := recover(); p != nil {
				if _, ok := p.(fatalPanic); !ok {
					panic(p)
				}
			}
		}()
		f(c)
	}()
	return c
}

// walTest is the crash test of the toy WAL with a planted bug (or none).
func walTest(bug walBug, records int) crashtest.Test {
	return crashtest.Test{
		Models: []model.Model{model.Prefix, model.Reorder, model.Torn},
		Workload: func(w *crashtest.Workload) error {
			wal := newWAL(w.Device(0), bug)
			for i := uint64(1); i <= uint64(records); i++ {
				if err := wal.Append(i, fmt.Appendf(nil, "record %d", i)); err != nil {
					return err
				}
				w.Ack(i, "append")
			}
			return nil
		},
		Check: func(c *crashtest.Crash) error {
			recs, err := openWAL(c.Device(0))
			for _, r := range recs {
				if string(r.Payload) != fmt.Sprintf("record %d", r.Seq) {
					c.Errorf("record %d holds %q", r.Seq, r.Payload)
				}
				c.Found(r.Seq)
			}
			return err
		},
		Oracles: []crashtest.Oracle{crashtest.AckedPresent(), crashtest.NoHole(), crashtest.NoPhantom()},
	}
}

// The correct WAL survives every model, and the exploration is not vacuous: every model checked
// states after acknowledgements.
func TestCorrectWALPasses(t *testing.T) {
	res := walTest(walCorrect, 6).Run(t)
	if len(res.Reports) != 3 {
		t.Fatalf("%d reports, want one per model", len(res.Reports))
	}
	for _, r := range res.Reports {
		if r.Checked < 6 {
			t.Errorf("%s: only %d states checked", r.Model, r.Checked)
		}
	}
}

var replayLine = regexp.MustCompile(`replay: powercut replay --log (\S+) --state (\S+) --out crash\.img`)

// Each planted bug is caught: Run reports violations through Errorf, each with a replay line
// whose kept recording rebuilds a crash image on which the engine's recovery shows the bug
// again, and the reports name the oracle that sees the bug.
func TestBuggyWALCaught(t *testing.T) {
	for _, tc := range []struct {
		bug    walBug
		oracle string // the oracle that must report it
	}{
		{walAckBeforeFlush, "acked-present"},
		{walHeadBeforeData, "recover"},
	} {
		t.Run(tc.bug.String(), func(t *testing.T) {
			ct := walTest(tc.bug, 4)
			ct.KeepDir = t.TempDir()
			var res *crashtest.Result
			c := capture(t, func(tb testing.TB) { res = ct.Run(tb) })
			if len(c.fatals) > 0 {
				t.Fatalf("fatal: %v", c.fatals)
			}
			if len(c.errs) == 0 {
				t.Fatalf("%s: no violation reported", tc.bug)
			}
			t.Logf("first of %d: %s", len(c.errs), c.errs[0])
			if len(res.Failures) != len(c.errs) {
				t.Errorf("%d failures in the result, %d reported", len(res.Failures), len(c.errs))
			}
			seen := false
			for _, f := range res.Failures {
				seen = seen || f.Oracle == tc.oracle
				if f.Model == model.Prefix {
					t.Errorf("prefix (in-order, everything completed lands) should not break this WAL: %s", f)
				}
			}
			if !seen {
				t.Errorf("no %s violation among %v", tc.oracle, c.errs)
			}
			for _, msg := range c.errs {
				m := replayLine.FindStringSubmatch(msg)
				if m == nil {
					t.Fatalf("no replay line in %q", msg)
				}
				if m[1] != res.Log || !strings.HasPrefix(m[1], ct.KeepDir) {
					t.Errorf("replay names %s, the kept log is %s under %s", m[1], res.Log, ct.KeepDir)
				}
				reproduce(t, m[1], m[2])
			}
		})
	}
}

// reproduce rebuilds the state from the kept log, as powercut replay does, and checks that the
// engine's recovery on it breaks a promise: lost acknowledged records or a corrupt record.
func reproduce(t *testing.T, log, state string) {
	t.Helper()
	l, err := pclog.Open(log)
	if err != nil {
		t.Fatalf("kept log: %v", err)
	}
	defer l.Close()
	imgs, cand, err := explore.Materialize(explore.Source{Log: l}, state)
	if err != nil {
		t.Fatalf("replay %s: %v", state, err)
	}
	acks, idx := record.Acks(l)
	promised := 0
	for _, i := range idx {
		if i <= cand.Point.MarkOp {
			promised++
		}
	}
	dev := record.NewCOWStore(imgs[0], imgs[0].Size())
	recs, err := openWAL(crashDisk{dev})
	if err == nil && len(recs) >= promised {
		t.Errorf("state %s replays to %d records, %d of %d acknowledged: no bug", state, len(recs), promised, len(acks))
	}
}

// crashDisk opens a replayed image (tests only: Crash.Device does this inside Check).
type crashDisk struct{ *record.MemStore }

func (d crashDisk) WriteAt(p []byte, off int64, _ bool) error {
	_, err := d.MemStore.WriteAt(p, off)
	return err
}
func (d crashDisk) Flush() error { return nil }

// Explore gives the same failures as Run without a testing.TB.
func TestExploreMatchesRun(t *testing.T) {
	ct := walTest(walHeadBeforeData, 3)
	ct.Jobs = 1
	res, err := ct.Explore(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ct.KeepDir = t.TempDir()
	var run *crashtest.Result
	capture(t, func(tb testing.TB) { run = ct.Run(tb) })
	if len(res.Failures) == 0 || len(res.Failures) != len(run.Failures) {
		t.Fatalf("explore found %d, run %d", len(res.Failures), len(run.Failures))
	}
	for i := range res.Failures {
		if res.Failures[i].StateID != run.Failures[i].StateID {
			t.Errorf("failure %d: %s vs %s", i, res.Failures[i].StateID, run.Failures[i].StateID)
		}
	}
}

// Budget.States bounds the states of each crash point; Budget.Failures stops the exploration.
func TestBudget(t *testing.T) {
	ct := walTest(walAckBeforeFlush, 6)
	ct.Models = []model.Model{model.Torn}
	ct.Strategy = model.Exhaustive
	ct.Budget = crashtest.Budget{States: 2, ShortStates: 2, Failures: 3}
	res, err := ct.Explore(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := res.Reports[0]
	if r.States > 2*r.CrashPoints || r.Truncated == 0 {
		t.Errorf("%d states at %d points (%d truncated), want at most 2 per point", r.States, r.CrashPoints, r.Truncated)
	}
	if len(res.Failures) != 3 || !r.StoppedEarly {
		t.Errorf("%d failures (stopped early %v), want 3", len(res.Failures), r.StoppedEarly)
	}
}

// Running out of time is logged, not failed, and stops before the remaining models.
func TestTimeBudget(t *testing.T) {
	ct := walTest(walAckBeforeFlush, 30)
	ct.Models = []model.Model{model.Torn, model.Reorder}
	ct.Strategy = model.Exhaustive
	ct.Budget = crashtest.Budget{Time: time.Nanosecond, ShortTime: time.Nanosecond}
	var res *crashtest.Result
	c := capture(t, func(tb testing.TB) { res = ct.Run(tb) })
	if len(c.fatals) > 0 {
		t.Fatalf("fatal: %v", c.fatals)
	}
	if !res.OutOfTime || len(res.Reports) != 1 {
		t.Errorf("out of time %v, %d reports; want true and 1 (reorder not explored)", res.OutOfTime, len(res.Reports))
	}
}

// A check that cannot run, or a workload that fails, stops the test with Fatalf; a recovery that
// panics is a violation.
func TestErrors(t *testing.T) {
	base := walTest(walCorrect, 2)
	base.Models = []model.Model{model.Reorder}

	ct := base
	ct.Check = func(c *crashtest.Crash) error { return crashtest.CannotCheck(errors.New("no scratch space")) }
	c := capture(t, func(tb testing.TB) { ct.Run(tb) })
	if len(c.fatals) != 1 || !strings.Contains(c.fatals[0], "no scratch space") {
		t.Errorf("CannotCheck: fatals %q", c.fatals)
	}

	ct = base
	ct.Workload = func(w *crashtest.Workload) error { w.Ack(1, "a"); w.Ack(1, "b"); return nil }
	c = capture(t, func(tb testing.TB) { ct.Run(tb) })
	if len(c.fatals) != 1 || !strings.Contains(c.fatals[0], record.ErrDuplicateAck.Error()) {
		t.Errorf("duplicate ack: fatals %q", c.fatals)
	}

	ct = base
	ct.Check = func(c *crashtest.Crash) error { panic("slot index out of range") }
	ct.KeepDir = t.TempDir()
	c = capture(t, func(tb testing.TB) { ct.Run(tb) })
	if len(c.errs) == 0 || !strings.Contains(c.errs[0], "recover: panic: slot index out of range") {
		t.Errorf("panic: errors %q", c.errs)
	}
}

// Several devices: a state is checked with every device's image, and a write lost on the second
// device is seen.
func TestTwoDevices(t *testing.T) {
	ct := crashtest.Test{
		Devices: []crashtest.Device{{Name: "log", Size: 64 << 10}, {Name: "data", Size: 64 << 10, SectorSize: 4096}},
		Models:  []model.Model{model.Reorder},
		Workload: func(w *crashtest.Workload) error {
			if err := w.Device(0).WriteAt(filled(1, 512), 0, true); err != nil {
				return err
			}
			w.Ack(1, "log")
			if err := w.Device(1).WriteAt(filled(2, 4096), 0, false); err != nil { // no FLUSH, no FUA
				return err
			}
			w.Ack(2, "data")
			return nil
		},
		Check: func(c *crashtest.Crash) error {
			for i, ord := range []uint64{1, 2} {
				b := make([]byte, 1)
				if _, err := c.Device(i).ReadAt(b, 0); err != nil {
					return err
				}
				if b[0] == byte(ord) {
					c.Found(ord)
				}
			}
			return nil
		},
		Oracles: []crashtest.Oracle{crashtest.AckedPresent()},
	}
	res, err := ct.Explore(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) == 0 {
		t.Fatal("the unflushed write to device 1 was not reported lost")
	}
	for _, f := range res.Failures {
		if !strings.Contains(f.Detail, "op 2 (data)") {
			t.Errorf("unexpected failure %s", f)
		}
	}
}

// Submit makes in-flight operations without goroutines: a FLUSH submitted while a write is in
// flight does not cover it, so the acknowledgement that trusted it is caught.
func TestSubmitInFlight(t *testing.T) {
	ct := crashtest.Test{
		Models: []model.Model{model.Reorder},
		Workload: func(w *crashtest.Workload) error {
			d := w.Device(0)
			wr, err := d.Submit(record.Write(filled(7, 512), 0, 0))
			if err != nil {
				return err
			}
			if err := d.Flush(); err != nil { // the write is still in flight: not covered
				return err
			}
			if err := wr.Wait(); err != nil {
				return err
			}
			w.Ack(1, "write")
			return nil
		},
		Check: func(c *crashtest.Crash) error {
			b := make([]byte, 1)
			if _, err := c.Image(0).ReadAt(b, 0); err != nil {
				return err
			}
			if b[0] == 7 {
				c.Found(1)
			}
			return nil
		},
		Oracles: []crashtest.Oracle{crashtest.AckedPresent()},
	}
	res, err := ct.Explore(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) != 1 || res.Failures[0].Oracle != "acked-present" {
		t.Errorf("failures %v, want the write acknowledged after an uncovering flush reported lost", res.Failures)
	}
	// The same workload with the completion waited for before the FLUSH passes.
	ct.Workload = func(w *crashtest.Workload) error {
		d := w.Device(0)
		wr, err := d.Submit(record.Write(filled(7, 512), 0, 0))
		if err != nil {
			return err
		}
		if err := wr.Wait(); err != nil {
			return err
		}
		if err := d.Flush(); err != nil {
			return err
		}
		w.Ack(1, "write")
		return nil
	}
	ct.Run(t)
}

func filled(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}
