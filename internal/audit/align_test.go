package audit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/dmlogwrites"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// layerFunc drives a layer: top and bottom devices, and mark, which marks both sides.
type layerFunc func(t *testing.T, top, bot *record.Device, mark func(string))

// separately records a layer's top and bottom with two recorders that share no order (as
// dm-log-writes above a kernel layer and powercut below it would), and returns both paths.
func separately(t *testing.T, layer layerFunc) (topPath, botPath string) {
	t.Helper()
	dir := t.TempDir()
	open := func(name string) (*record.Recorder, string) {
		p := filepath.Join(dir, name+".pclog")
		h := pclog.Header{Version: pclog.FormatVersion, Devices: []pclog.Device{{ID: 0, Name: name, Size: testSize, SectorSize: 512}}}
		r, err := record.Create(p, h, []record.Store{record.NewMemStore(testSize)})
		must(t, err)
		return r, p
	}
	tr, tp := open("top")
	br, bp := open("bottom")
	layer(t, tr.Device(0), br.Device(0), func(name string) {
		must(t, tr.Mark(name))
		must(t, br.Mark(name))
	})
	must(t, tr.Close())
	must(t, br.Close())
	return tp, bp
}

// together records the same layer with one recorder (one global order).
func together(t *testing.T, layer layerFunc) *pclog.Log {
	return twoDevices(t, func(top, bot *record.Device) {
		layer(t, top, bot, func(name string) { must(t, top.Recorder().Mark(name)) })
	})
}

func openLog(t *testing.T, p string) *pclog.Log {
	t.Helper()
	l, err := pclog.Open(p)
	must(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func align(t *testing.T, topPath, botPath string) (*pclog.Log, AlignInfo) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "merged.pclog")
	info, err := Align(openLog(t, topPath), openLog(t, botPath), out)
	must(t, err)
	return openLog(t, out), info
}

// writeThrough passes every write down and flushes below before acknowledging a FLUSH.
func writeThrough(t *testing.T, top, bot *record.Device, mark func(string)) {
	for r := range 4 {
		for i := range 3 {
			p := bytes.Repeat([]byte{byte(r*3 + i + 1)}, 4096)
			off := int64(r*3+i) * 4096
			must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: 4096, Data: p}, func() error { return bot.WriteAt(p, off, false) }))
		}
		must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, bot.Flush))
		mark(string(rune('a' + r)))
	}
}

// lazyFlush acknowledges a FLUSH at once and writes the data back later, never flushing below
// until the end: the seed case of the audit.
func lazyFlush(t *testing.T, top, bot *record.Device, mark func(string)) {
	var held [][2]any
	for r := range 4 {
		for i := range 3 {
			p := bytes.Repeat([]byte{byte(r*3 + i + 1)}, 4096)
			off := int64(r*3+i) * 4096
			must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: 4096, Data: p}, func() error {
				held = append(held, [2]any{p, off})
				return nil
			}))
		}
		must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, func() error { return nil }))
		mark(string(rune('a' + r)))
		for _, h := range held { // write-back after the top was told it is durable
			must(t, bot.WriteAt(h[0].([]byte), h[1].(int64), false))
		}
		held = nil
	}
	must(t, bot.Flush())
}

func auditVerdict(t *testing.T, l *pclog.Log) *explore.Report {
	t.Helper()
	rep, _, err := Run(context.Background(), explore.Source{Log: l}, Config{Model: model.Reorder}, explore.Options{Strategy: model.DropK, K: 2, Minimize: explore.MinimizeOff}, nil)
	must(t, err)
	return rep
}

// TestAlignVerdicts: two recordings of a layer made by separate recorders, merged on their
// common marks, give the verdict one recording of both sides gives: a write-through layer
// passes, a layer that acknowledges FLUSH before writing back is caught. The same holds when the
// top comes through dm-log-writes (exported and imported again: no submit order).
func TestAlignVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer layerFunc
		bad   bool
	}{{"write-through", writeThrough, false}, {"flush-acked-early", lazyFlush, true}} {
		t.Run(tc.name, func(t *testing.T) {
			one := auditVerdict(t, together(t, tc.layer))
			tp, bp := separately(t, tc.layer)
			merged, info := align(t, tp, bp)
			two := auditVerdict(t, merged)
			if len(info.Marks) != 4 {
				t.Errorf("aligned on %v, want the 4 marks", info.Marks)
			}
			if (len(one.Violations) > 0) != tc.bad || (len(two.Violations) > 0) != tc.bad {
				t.Fatalf("violations: one recording %d, two aligned %d; want bad=%v", len(one.Violations), len(two.Violations), tc.bad)
			}
			t.Logf("one recording: %d states, %d violations; aligned: %d states, %d violations", one.Checked, len(one.Violations), two.Checked, len(two.Violations))

			// The top through dm-log-writes, as a kernel's top would be recorded.
			var dm bytes.Buffer
			_, err := dmlogwrites.Export(openLog(t, tp), &dm)
			must(t, err)
			imported := filepath.Join(t.TempDir(), "top-dm.pclog")
			_, err = dmlogwrites.Import(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(dm.Bytes())), nil }, imported, dmlogwrites.ImportOptions{Size: testSize})
			must(t, err)
			merged2, _ := align(t, imported, bp)
			three := auditVerdict(t, merged2)
			if (len(three.Violations) > 0) != tc.bad {
				t.Fatalf("top through dm-log-writes: %d violations, want bad=%v", len(three.Violations), tc.bad)
			}
		})
	}
}

// TestAlignRefuses: no common mark, common marks in different orders, a top op in flight at a
// mark, a recording with two devices.
func TestAlignRefuses(t *testing.T) {
	p := bytes.Repeat([]byte{1}, 512)
	cases := map[string]layerFunc{
		"no common mark": func(t *testing.T, top, bot *record.Device, mark func(string)) {
			must(t, top.WriteAt(p, 0, false))
			must(t, bot.WriteAt(p, 0, false))
			must(t, top.Recorder().Mark("only-top"))
		},
		"order": func(t *testing.T, top, bot *record.Device, mark func(string)) {
			must(t, top.Recorder().Mark("x"))
			must(t, top.Recorder().Mark("y"))
			must(t, bot.Recorder().Mark("y"))
			must(t, bot.Recorder().Mark("x"))
		},
		"in flight": func(t *testing.T, top, bot *record.Device, mark func(string)) {
			must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: 0, Length: 512, Data: p}, func() error {
				mark("m")
				return bot.WriteAt(p, 0, false)
			}))
		},
	}
	for name, layer := range cases {
		tp, bp := separately(t, layer)
		_, err := Align(openLog(t, tp), openLog(t, bp), filepath.Join(t.TempDir(), "m.pclog"))
		if !errors.Is(err, ErrAlign) {
			t.Errorf("%s: err %v, want ErrAlign", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	l := twoDevices(t, func(top, bot *record.Device) { must(t, top.Recorder().Mark("m")) })
	if _, err := Align(l, l, filepath.Join(t.TempDir(), "m.pclog")); !errors.Is(err, ErrAlign) {
		t.Errorf("two-device recording: err %v, want ErrAlign", err)
	}
}
