package audit

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

const testSize = 64 << 10

// twoDevices records a script on an audit recording's top and bottom devices (in-process, one
// global order) and opens the log.
func twoDevices(t *testing.T, script func(top, bot *record.Device)) *pclog.Log {
	t.Helper()
	return twoDevicesSize(t, testSize, script)
}

func twoDevicesSize(t *testing.T, size int64, script func(top, bot *record.Device)) *pclog.Log {
	t.Helper()
	path := filepath.Join(t.TempDir(), "a.pclog")
	h := pclog.Header{Version: pclog.FormatVersion, Devices: []pclog.Device{{ID: Top, Name: "top", Size: size, SectorSize: 512}, {ID: Bottom, Name: "bottom", Size: size, SectorSize: 512}}}
	r, err := record.Create(path, h, []record.Store{record.NewMemStore(size), record.NewMemStore(size)})
	if err != nil {
		t.Fatal(err)
	}
	script(r.Device(Top), r.Device(Bottom))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func runCheck(t *testing.T, l *pclog.Log, m model.Model) *explore.Report {
	t.Helper()
	rep, _, err := Run(context.Background(), explore.Source{Log: l}, Config{Model: m}, explore.Options{Strategy: model.Exhaustive, Minimize: explore.MinimizeOff}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// A layer that writes through and flushes the device below before acknowledging the top's
// FLUSH refines the top: no bottom state breaks a promise.
func TestWriteThroughPasses(t *testing.T) {
	a, b := bytes.Repeat([]byte{0xa1}, 4096), bytes.Repeat([]byte{0xb2}, 4096)
	l := twoDevices(t, func(top, bot *record.Device) {
		// top W(a) forwarded as bottom W(a); top FLUSH forwarded as bottom FLUSH.
		must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: 0, Length: 4096, Data: a}, func() error { return bot.WriteAt(a, 0, false) }))
		must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, bot.Flush))
		must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: 4096, Length: 4096, Data: b, Flags: pclog.FlagFUA}, func() error { return bot.WriteAt(b, 4096, true) }))
		must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: 0, Length: 4096, Data: b}, func() error { return bot.WriteAt(b, 0, false) }))
	})
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		rep := runCheck(t, l, m)
		if rep.Checked == 0 || len(rep.Violations) != 0 {
			t.Fatalf("%s: checked %d states, violations %+v", m, rep.Checked, rep.Violations)
		}
	}
}

// The seed bug: the layer acknowledges the top's FLUSH after flushing the device below, but the
// write it covers reaches the device below only after that flush. Some bottom state loses it;
// the violation names the write, the FLUSH that made it durable and the state.
func TestFlushBeforeWriteIsCaught(t *testing.T) {
	a := bytes.Repeat([]byte{0xa1}, 4096)
	l := twoDevices(t, func(top, bot *record.Device) {
		must(t, top.WriteAt(a, 8192, false)) // cached by the layer
		must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, bot.Flush))
		must(t, bot.WriteAt(a, 8192, false)) // written back after the flush: not covered
	})
	rep := runCheck(t, l, model.Reorder)
	if len(rep.Violations) == 0 {
		t.Fatalf("no violation in %d states", rep.Checked)
	}
	d := rep.Violations[0].Detail
	for _, want := range []string{"top WRITE op 0 [8192,+4096)", "top FLUSH op 2", "8 top sectors from sector 16 (byte 8192) hold the top's base content"} {
		if !strings.Contains(d, want) {
			t.Errorf("violation %q does not say %q", d, want)
		}
	}
	if rep.Violations[0].StateID == "" {
		t.Error("no bottom state ID")
	}
}

// A layer that writes bytes nobody asked for (identity view) is caught even where the top
// wrote nothing; and one that shows an overwritten (older) version after a durable newer one
// is caught as a resurrection.
func TestScribbleAndResurrection(t *testing.T) {
	a, b, junk := bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 512), bytes.Repeat([]byte{9}, 512)
	l := twoDevices(t, func(top, bot *record.Device) {
		must(t, bot.WriteAt(junk, 20480, false))
		must(t, bot.Flush())
		must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: 0, Length: 512, Data: a}, func() error { return bot.WriteAt(a, 0, true) }))
		must(t, top.WriteAt(b, 0, true)) // acknowledged FUA, never written below
	})
	rep := runCheck(t, l, model.Reorder)
	var scribble, lost bool
	for _, v := range rep.Violations {
		scribble = scribble || strings.Contains(v.Detail, "top sector 40 (byte 20480) holds bytes no top operation wrote")
		lost = lost || strings.Contains(v.Detail, "top WRITE op 4 [0,+512) was durable, made so by its own FUA") && strings.Contains(v.Detail, "holds the data of top op 3")
	}
	if !scribble || !lost {
		t.Fatalf("scribble %v lost %v in %+v", scribble, lost, rep.Violations)
	}
}

// The device filter: exploring the bottom only enumerates the bottom's crash points and
// choices, whatever the top does.
func TestBottomOnlyStates(t *testing.T) {
	a := bytes.Repeat([]byte{1}, 512)
	l := twoDevices(t, func(top, bot *record.Device) {
		for i := range 6 {
			must(t, top.WriteAt(a, int64(i)*512, false))
			must(t, top.Flush())
		}
		must(t, bot.WriteAt(a, 0, false))
		must(t, bot.WriteAt(a, 512, false))
	})
	count := func(devs []uint16) int {
		rep, err := explore.Explore(context.Background(), explore.Source{Log: l, Devices: devs}, explore.Options{Model: model.Reorder, Strategy: model.Exhaustive}, nopChecker{}, nil)
		must(t, err)
		return rep.CrashPoints
	}
	if all, bottom := count(nil), count([]uint16{Bottom}); bottom != 1 || all != 7 {
		t.Fatalf("crash points: all devices %d (want 7), bottom only %d (want 1: the end)", all, bottom)
	}
}

type nopChecker struct{}

func (nopChecker) Check(context.Context, *explore.Candidate) ([]explore.Violation, error) {
	return nil, nil
}

// bothPaths checks every state twice, judging the bottom's sectors from its segments (the
// identity fast path) and by reading them, and fails the test where the verdicts differ.
type bothPaths struct {
	t          *testing.T
	fast, slow *Checker
	states     int
	viols      int
}

func (b *bothPaths) Check(ctx context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	vf, err := b.fast.Check(ctx, c)
	if err != nil {
		return nil, err
	}
	vs, err := b.slow.Check(ctx, c)
	if err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(vf, vs) {
		b.t.Errorf("state %s: from segments %v, read %v", c.ID, vf, vs)
	}
	b.states++
	b.viols += len(vf)
	return vf, nil
}

// TestSegmentHashesEqualReads: on a sloppy random layer (late and skipped flushes, writes the
// top never asked for, discards and zeroes, torn bottom writes), the identity view judged from
// where each sector comes from gives exactly the verdicts of reading every sector.
func TestSegmentHashesEqualReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	data := func(n int64) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.IntN(4)) // few values: equal sectors from different ops
		}
		return p
	}
	l := twoDevices(t, func(top, bot *record.Device) {
		var late []func() error
		for range 100 {
			off := int64(rng.IntN(testSize/512-8)) * 512
			n := int64(1+rng.IntN(8)) * 512
			switch r := rng.IntN(10); {
			case r < 5:
				p := data(n)
				fua := rng.IntN(4) == 0
				must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: n, Data: p, Flags: map[bool]pclog.Flags{true: pclog.FlagFUA}[fua]}, func() error {
					if rng.IntN(3) == 0 {
						late = append(late, func() error { return bot.WriteAt(p, off, false) })
						return nil
					}
					return bot.WriteAt(p, off, fua)
				}))
			case r < 6:
				must(t, top.Do(&pclog.Record{Kind: pclog.KindWriteZeroes, Offset: off, Length: n}, func() error { return bot.WriteZeroes(off, n, false) }))
			case r < 7:
				must(t, top.Do(&pclog.Record{Kind: pclog.KindDiscard, Offset: off, Length: n}, func() error { return bot.Discard(off, n) }))
			case r < 8:
				must(t, bot.WriteAt(data(n), off, false)) // a scribble
			default:
				must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, func() error {
					for _, f := range late {
						must(t, f())
					}
					late = nil
					if rng.IntN(3) == 0 {
						return nil // acknowledged without flushing below
					}
					return bot.Flush()
				}))
			}
		}
	})
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		fast, err := NewChecker(l, Config{Model: m})
		must(t, err)
		slow, err := NewChecker(l, Config{Model: m})
		must(t, err)
		slow.botHash = nil // read every sector
		b := &bothPaths{t: t, fast: fast, slow: slow}
		_, err = explore.Explore(context.Background(), explore.Source{Log: l, Devices: []uint16{Bottom}},
			explore.Options{Model: m, Strategy: model.DropK, K: 2, Minimize: explore.MinimizeOff}, b, nil)
		must(t, err)
		if b.viols == 0 || b.states < 100 {
			t.Fatalf("%s: %d states, %d violations: the layer is too tame to compare the paths", m, b.states, b.viols)
		}
		t.Logf("%s: %d states, %d violations, the same on both paths", m, b.states, b.viols)
	}
}
