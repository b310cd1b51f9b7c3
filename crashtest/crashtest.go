// Package crashtest turns a storage engine's crash test into a few lines inside go test.
//
// A Test runs a workload against recorded block devices (record.Device), explores every crash
// state the durability models the engine claims to survive allow (package explore), and on each
// distinct crash image calls the engine's own open and recovery (Test.Check). What the recovered
// state contains is compared with what the workload had promised by the time of the crash: its
// acknowledgements (Workload.Ack), first-class marks with an ordinal and a name. Built-in oracles
// state the usual promises (AckedPresent, NoHole, AllOrNothing, NoPhantom) and combine freely.
//
// Every violation goes to t.Errorf with the crash state's ID and the command that rebuilds the
// crash image, from a copy of the recording kept for the purpose:
//
//	powercut replay --log /tmp/crashtest-TestWAL-1234/crash.pclog --state R4.2.d1 --out crash.img
//
// A minimal crash test of a write-ahead log:
//
//	func TestWALCrash(t *testing.T) {
//		crashtest.Test{
//			Models: []model.Model{model.Reorder, model.Torn},
//			Workload: func(w *crashtest.Workload) error {
//				wal := NewWAL(w.Device(0))
//				for i := uint64(1); i <= 8; i++ {
//					if err := wal.Append(i, []byte("payload")); err != nil {
//						return err
//					}
//					w.Ack(i, "append") // Append returned: the record is promised
//				}
//				return nil
//			},
//			Check: func(c *crashtest.Crash) error {
//				recs, err := OpenWAL(c.Device(0)) // the engine's own recovery
//				for _, r := range recs {
//					c.Found(r.Seq)
//				}
//				return err // an error is a violation: the engine cannot open this crash image
//			},
//			Oracles: []crashtest.Oracle{crashtest.AckedPresent(), crashtest.NoHole()},
//		}.Run(t)
//	}
//
// Budgets keep the test usable in a go test run: at most Budget.States states per crash point and
// Budget.Time in all, both smaller under -short, and never past the test binary's -timeout.
// With a *testing.T each model runs as a subtest named after it, so -run TestWALCrash/torn picks
// one.
package crashtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// Test is one crash test: a workload, the models it must survive, and how to judge a crash image.
type Test struct {
	// Devices are the recorded devices, device i with ID i (default: one 1 MiB device of
	// 512-byte sectors).
	Devices []Device
	// Workload drives the engine on the recorded devices. Its error fails the test (t.Fatalf).
	Workload func(w *Workload) error
	// Check opens and recovers the engine on one crash image (Crash.Device), reports what the
	// recovered state contains (Crash.Found) and any other broken invariant (Crash.Errorf). A
	// returned error is a violation (oracle "recover"): the engine could not recover the
	// image; wrap it with CannotCheck when the check itself could not run. Check runs on Jobs
	// goroutines at once, each with its own Crash.
	Check func(c *Crash) error
	// Oracles judge what Check found against the acknowledgements issued before the crash
	// point. They run only when Check returned nil.
	Oracles []Oracle
	// Models the engine claims to survive (default: reorder).
	Models []model.Model
	// Discard is what a discarded range may read as after a crash (default: either).
	Discard model.DiscardPolicy
	// Strategy picks the states of a crash point (default: drop-k), K its k (default 2).
	Strategy model.Strategy
	K        int
	Budget   Budget
	// Jobs is the number of checks run in parallel (default GOMAXPROCS).
	Jobs int
	// Options, when set, has the last word on the exploration options (minimisation, mark
	// range, seed...).
	Options func(*explore.Options)
	// KeepDir is where a failing test keeps its recording (default: os.TempDir()).
	KeepDir string
}

// Device describes one recorded device.
type Device struct {
	Name       string
	Size       int64 // bytes (default 1 MiB)
	SectorSize int   // 512 or 4096 (default 512): the unit of tearing
}

// Budget bounds an exploration so that it fits in a go test run.
type Budget struct {
	// States is the most states generated per crash point (default 64; under -short
	// ShortStates, default 8).
	States, ShortStates int
	// Time bounds the whole exploration (default: none; under -short ShortTime, default 10s).
	// Either way it ends before the test binary's -timeout. Running out of time is not a
	// failure: the test logs how far it got.
	Time, ShortTime time.Duration
	// Failures is the number of violations reported per model before the exploration stops
	// (default 10).
	Failures int
}

// Result is what an exploration found.
type Result struct {
	// Log is the recording. Run removes it with the test's temporary directory unless a
	// violation made it keep a copy (then Log names the copy).
	Log string
	// Reports holds one report per model explored, in Test.Models order.
	Reports []*explore.Report
	// Failures lists every violation, model by model.
	Failures []Failure
	// OutOfTime: the time budget ended the exploration; later models were not explored.
	OutOfTime bool
}

// Failure is one violation in one crash state.
type Failure struct {
	Model model.Model
	explore.Found
}

// Replay is the command that rebuilds the failure's crash image from log.
func (f Failure) Replay(log string) string {
	return fmt.Sprintf("powercut replay --log %s --state %s --out crash.img", log, f.StateID)
}

func (f Failure) String() string {
	where := f.Reason
	if f.LastMark != "" && !strings.Contains(where, f.LastMark) {
		where += ", after mark " + f.LastMark
	}
	return fmt.Sprintf("%s: state %s (%s): %s: %s", f.Model, f.StateID, where, f.Oracle, f.Detail)
}

// ErrCannotCheck marks an error of Check that means the check could not run (CannotCheck).
var ErrCannotCheck = errors.New("crashtest: the check could not run")

// CannotCheck wraps err to say that the check itself failed (a bug in the test, not in the
// engine): the exploration stops with it instead of counting a violation.
func CannotCheck(err error) error { return fmt.Errorf("%w: %w", ErrCannotCheck, err) }

// Run records the workload, explores it under every model and reports each violation with
// t.Errorf (the state, what broke, and the replay command). Violations of all models are
// reported; a workload or tool error stops the test with t.Fatalf. With a *testing.T each model
// runs as a subtest.
func (ct Test) Run(t testing.TB) *Result {
	t.Helper()
	ctx, cancel := ct.budgetContext(t)
	defer cancel()
	dir := t.TempDir()
	rec, err := ct.record(dir)
	if err != nil {
		t.Fatalf("crashtest: %v", err)
	}
	res := &Result{Log: rec}
	l, err := pclog.Open(rec)
	if err != nil {
		t.Fatalf("crashtest: open the recording: %v", err)
	}
	defer l.Close()
	var kept string
	keep := func(tb testing.TB) string {
		if kept != "" {
			return kept
		}
		path, err := keepLog(ct.KeepDir, t.Name(), rec)
		if err != nil {
			tb.Errorf("crashtest: keep the recording: %v", err)
			return rec
		}
		kept, res.Log = path, path
		return path
	}
	for _, m := range ct.models() {
		one := func(tb testing.TB) {
			tb.Helper()
			rep, fails, err := ct.explore(ctx, l, m)
			if rep != nil {
				res.Reports = append(res.Reports, rep)
			}
			res.Failures = append(res.Failures, fails...)
			if len(fails) > 0 {
				path := keep(tb)
				for _, f := range fails {
					tb.Errorf("crashtest: %s\n\treplay: %s", f, f.Replay(path))
				}
			}
			if rep != nil {
				tb.Logf("crashtest: %s: %d crash points, %d states, %d distinct checked, %d bad", m, rep.CrashPoints, rep.States, rep.Checked, rep.BadStates)
			}
			switch {
			case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
				res.OutOfTime = true
				tb.Logf("crashtest: %s: time budget spent after %d states checked", m, checked(rep))
			case err != nil:
				tb.Fatalf("crashtest: %s: %v", m, err)
			case rep != nil && rep.StoppedEarly:
				tb.Logf("crashtest: %s: stopped after %d violations (Budget.Failures)", m, len(fails))
			}
		}
		if tt, ok := t.(*testing.T); ok {
			tt.Run(m.String(), func(t *testing.T) { one(t) })
		} else {
			one(t)
		}
		if res.OutOfTime {
			break
		}
	}
	return res
}

func checked(rep *explore.Report) int {
	if rep == nil {
		return 0
	}
	return rep.Checked
}

// Explore records the workload in dir and explores it under every model without a testing.TB:
// for tests that expect violations, and for tools. The error is a workload or tool error;
// violations are in the result.
func (ct Test) Explore(ctx context.Context, dir string) (*Result, error) {
	path, err := ct.record(dir)
	if err != nil {
		return nil, err
	}
	l, err := pclog.Open(path)
	if err != nil {
		return nil, fmt.Errorf("crashtest: open the recording: %w", err)
	}
	defer l.Close()
	res := &Result{Log: path}
	for _, m := range ct.models() {
		rep, fails, err := ct.explore(ctx, l, m)
		if rep != nil {
			res.Reports = append(res.Reports, rep)
		}
		res.Failures = append(res.Failures, fails...)
		if err != nil {
			return res, fmt.Errorf("crashtest: %s: %w", m, err)
		}
	}
	return res, nil
}

func (ct Test) models() []model.Model {
	if len(ct.Models) == 0 {
		return []model.Model{model.Reorder}
	}
	return ct.Models
}

func (ct Test) devices() []Device {
	if len(ct.Devices) == 0 {
		return []Device{{}}
	}
	return ct.Devices
}

// budgetContext bounds the exploration by the time budget and the test binary's deadline.
func (ct Test) budgetContext(t testing.TB) (context.Context, context.CancelFunc) {
	b := ct.Budget
	limit := b.Time
	if testing.Short() {
		limit = b.ShortTime
		if limit == 0 {
			limit = 10 * time.Second
		}
	}
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := d.Deadline(); ok {
			// Leave a tenth of the remaining time to report.
			td = td.Add(-time.Until(td) / 10)
			if deadline.IsZero() || td.Before(deadline) {
				deadline = td
			}
		}
	}
	if deadline.IsZero() {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), deadline)
}

// record runs the workload on fresh in-memory devices, recording to dir/crash.pclog.
func (ct Test) record(dir string) (string, error) {
	if ct.Workload == nil {
		return "", errors.New("crashtest: Test.Workload is not set")
	}
	if ct.Check == nil {
		return "", errors.New("crashtest: Test.Check is not set")
	}
	devs := ct.devices()
	h := pclog.Header{Version: pclog.FormatVersion, Source: "crashtest"}
	stores := make([]record.Store, len(devs))
	for i, d := range devs {
		if d.Size == 0 {
			d.Size = 1 << 20
		}
		if d.SectorSize == 0 {
			d.SectorSize = 512
		}
		if d.Name == "" {
			d.Name = fmt.Sprintf("dev%d", i)
		}
		h.Devices = append(h.Devices, pclog.Device{ID: uint16(i), Name: d.Name, Size: d.Size, SectorSize: d.SectorSize})
		stores[i] = record.NewMemStore(d.Size)
	}
	path := filepath.Join(dir, "crash.pclog")
	rec, err := record.Create(path, h, stores)
	if err != nil {
		return "", fmt.Errorf("crashtest: create the recording: %w", err)
	}
	w := &Workload{rec: rec}
	err = runWorkload(ct.Workload, w)
	if err == nil {
		err = w.err
	}
	if cerr := rec.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the recording: %w", cerr)
	}
	if err != nil {
		return "", fmt.Errorf("crashtest: workload: %w", err)
	}
	return path, nil
}

func runWorkload(f func(*Workload) error, w *Workload) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return f(w)
}

// explore explores one model of the recording.
func (ct Test) explore(ctx context.Context, l *pclog.Log, m model.Model) (*explore.Report, []Failure, error) {
	chk, err := newChecker(l, ct.Check, ct.Oracles)
	if err != nil {
		return nil, nil, err
	}
	b := ct.Budget
	states := b.States
	if states == 0 {
		states = 64
	}
	if testing.Short() {
		short := b.ShortStates
		if short == 0 {
			short = 8
		}
		states = min(states, short)
	}
	failures := b.Failures
	if failures == 0 {
		failures = 10
	}
	jobs := ct.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	opts := explore.Options{Model: m, Discard: ct.Discard, Strategy: ct.Strategy, K: ct.K, States: states,
		Jobs: jobs, MaxViolations: failures}
	if ct.Options != nil {
		ct.Options(&opts)
	}
	opts.Model = m
	var fails []Failure
	rep, err := explore.Explore(ctx, explore.Source{Log: l}, opts, chk, func(f explore.Found) {
		fails = append(fails, Failure{Model: m, Found: f})
	})
	return rep, fails, err
}

// keepLog copies the recording (and its stacks file, if any) to a new directory under dir named
// after the test, so that the replay command printed with a violation still works after the test.
func keepLog(dir, test, log string) (string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, test)
	kd, err := os.MkdirTemp(dir, "crashtest-"+name+"-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(kd, filepath.Base(log))
	if err := copyFile(log, out); err != nil {
		return "", err
	}
	if _, err := os.Stat(log + ".stacks"); err == nil {
		if err := copyFile(log+".stacks", out+".stacks"); err != nil {
			return "", err
		}
	}
	return out, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Workload is what Test.Workload drives: the recorded devices and the acknowledgements.
type Workload struct {
	rec *record.Recorder
	mu  sync.Mutex
	err error
}

// Device returns recorded device i (Test.Devices order). A *record.Device offers the block
// interface (BlockDevice) the engine's recovery gets on every crash image.
func (w *Workload) Device(i int) *record.Device { return w.rec.Device(uint16(i)) }

// Recorder returns the recording, for marks, Submit and fault triggers.
func (w *Workload) Recorder() *record.Recorder { return w.rec }

// Ack records that operation ordinal (the workload's own numbering, unique) named name was
// acknowledged: every crash state after this point must keep it (AckedPresent). Call it where
// the engine returns success to its caller. An error (an ordinal acknowledged twice) fails the
// test when the workload returns.
func (w *Workload) Ack(ordinal uint64, name string) {
	w.fail(w.rec.Ack(ordinal, name))
}

// Mark records a plain mark (a label in reports; no promise).
func (w *Workload) Mark(name string) { w.fail(w.rec.Mark(name)) }

func (w *Workload) fail(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}
