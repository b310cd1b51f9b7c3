package explore

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// largeLog writes a synthetic recording straight to a pclog: n 4 KiB writes at random offsets
// of a 1 GiB device, a FLUSH after every 20 (about 0.8 GiB of log for n = 200000).
func largeLog(b *testing.B, n int) *pclog.Log {
	b.Helper()
	path := filepath.Join(b.TempDir(), "large.pclog")
	const size = 1 << 30
	w, err := pclog.Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: size, SectorSize: 4096}}})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 4096)
	seq := uint64(0)
	for i := 0; i < n; i++ {
		data[0], data[1] = byte(i), byte(i>>8)
		if err := w.Append(&pclog.Record{Kind: pclog.KindWrite, Submit: seq + 1, Complete: seq + 2, Offset: rng.Int64N(size/4096) * 4096, Length: 4096, Data: data}); err != nil {
			b.Fatal(err)
		}
		seq += 2
		if i%20 == 19 {
			if err := w.Append(&pclog.Record{Kind: pclog.KindFlush, Submit: seq + 1, Complete: seq + 2}); err != nil {
				b.Fatal(err)
			}
			seq += 2
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// BenchmarkLargeLog explores a 200,000-write recording (10,000 flush epochs) under flush and
// under reorder (20 states per crash point), counting states without a checker: the cost of a
// crash point is what changed since the previous one, not the length of the log.
func BenchmarkLargeLog(b *testing.B) {
	l := largeLog(b, 200000)
	for _, tc := range []struct {
		name string
		opt  Options
	}{
		{"flush", Options{Model: model.Flush}},
		{"reorder-drop-k-20", Options{Model: model.Reorder, States: 20}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rep, err := Explore(context.Background(), Source{Log: l}, tc.opt, checkFunc(func(*Candidate) []Violation { return nil }), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(rep.States), "states/op")
				b.ReportMetric(float64(rep.States)/b.Elapsed().Seconds()*float64(i+1), "states/s")
			}
		})
	}
}
