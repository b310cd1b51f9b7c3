package explore

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/powercut/powercut/internal/dmlogwrites"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// fixture decompresses the real kernel recording and imports it; it skips when shared/ is absent.
func fixture(tb testing.TB) (l *pclog.Log, base *os.File, logBin string) {
	tb.Helper()
	fixtureDir := testenv.Fixture(tb, "ext4-ordered")
	dir := tb.TempDir()
	unz := func(name string) string {
		in, err := os.Open(filepath.Join(fixtureDir, name+".zst"))
		if err != nil {
			tb.Fatal(err)
		}
		defer in.Close()
		dec, err := zstd.NewReader(in)
		if err != nil {
			tb.Fatal(err)
		}
		defer dec.Close()
		p := filepath.Join(dir, name)
		out, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := io.Copy(out, dec); err != nil {
			tb.Fatal(err)
		}
		out.Close()
		return p
	}
	basePath, logBin := unz("base.img"), unz("log.bin")
	f, err := os.Open(basePath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	size, hash, err := pclog.HashBase(f)
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, "f.pclog")
	if _, err := dmlogwrites.Import(func() (io.ReadCloser, error) { return os.Open(logBin) }, out,
		dmlogwrites.ImportOptions{Base: &pclog.BaseRef{Device: 0, Size: size, Hash: hash, Path: basePath}}); err != nil {
		tb.Fatal(err)
	}
	l, err = pclog.Open(out)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l, f, logBin
}

// BenchmarkFixtureFlushPowercut materialises every crash point of the fixture under the flush
// model: the overlay of each state, with every overlay byte read (what a checker would see).
func BenchmarkFixtureFlushPowercut(b *testing.B) {
	l, base, _ := fixture(b)
	src := Source{Log: l, Bases: map[uint16]io.ReaderAt{0: base}}
	h, err := model.FromLog(l)
	if err != nil {
		b.Fatal(err)
	}
	pts := h.Points(model.Flush)
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		walk := h.Walk(model.Flush, model.DiscardZero)
		for _, p := range pts {
			e := walk.Epoch(p)
			ext, err := e.Overlay(&model.State{Model: model.Flush, Policy: model.DiscardZero, Point: p.Index})
			if err != nil {
				b.Fatal(err)
			}
			img := images(&src, h, ext)[0]
			for _, x := range img.Extents() {
				for off := x.Off; off < x.Off+x.Len; off += int64(len(buf)) {
					n := min(int64(len(buf)), x.Off+x.Len-off)
					if _, err := img.ReadAt(buf[:n], off); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
	b.ReportMetric(float64(len(pts)), "crashpoints/op")
}

// BenchmarkFixtureFlushFstests is the fstests approach, implemented honestly: for each crash
// point, copy the base image and replay the log from entry 0 up to that point (replay-log
// --limit N), discards written as zeros.
func BenchmarkFixtureFlushFstests(b *testing.B) {
	l, base, _ := fixture(b)
	h, err := model.FromLog(l)
	if err != nil {
		b.Fatal(err)
	}
	pts := h.Points(model.Flush)
	dir := b.TempDir()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for _, p := range pts {
			dst, err := os.Create(filepath.Join(dir, "replay.img"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(dst, io.NewSectionReader(base, 0, h.DevSize[0])); err != nil {
				b.Fatal(err)
			}
			for i, e := range l.Entries {
				if e.Complete >= p.T {
					break
				}
				switch e.Kind {
				case pclog.KindWrite:
					for off := int64(0); off < e.Length; off += int64(len(buf)) {
						n := min(int64(len(buf)), e.Length-off)
						if err := l.ReadData(i, buf[:n], off); err != nil {
							b.Fatal(err)
						}
						if _, err := dst.WriteAt(buf[:n], e.Offset+off); err != nil {
							b.Fatal(err)
						}
					}
				case pclog.KindDiscard, pclog.KindWriteZeroes:
					for off := int64(0); off < e.Length; off += int64(len(zero)) {
						n := min(int64(len(zero)), e.Length-off)
						if _, err := dst.WriteAt(zero[:n], e.Offset+off); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			dst.Close()
		}
	}
	b.ReportMetric(float64(len(pts)), "crashpoints/op")
}

// BenchmarkFixtureReorderGenerate measures state generation and dedup (no checker) under
// reorder/drop-k on the fixture.
func BenchmarkFixtureReorderGenerate(b *testing.B) {
	l, base, _ := fixture(b)
	src := Source{Log: l, Bases: map[uint16]io.ReaderAt{0: base}}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		rep, err := Explore(context.Background(), src, Options{Model: model.Reorder}, checkFunc(func(*Candidate) []Violation { return nil }), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rep.States), "states/op")
	}
}
