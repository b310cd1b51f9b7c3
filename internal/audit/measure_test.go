package audit

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// TestMeasureRate compares the audit's bottom states per second with a plain exploration of the
// bottom alone (no-op checker) on the same write-through recording. Run with
// POWERCUT_MEASURE=1 [POWERCUT_MEASURE_SIZE=bytes] go test -run MeasureRate -v ./internal/audit/
func TestMeasureRate(t *testing.T) {
	if os.Getenv("POWERCUT_MEASURE") == "" {
		t.Skip("set POWERCUT_MEASURE=1 to measure")
	}
	size := int64(testSize)
	if v := os.Getenv("POWERCUT_MEASURE_SIZE"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		must(t, err)
		size = n
	}
	rng := rand.New(rand.NewPCG(1, 2))
	l := twoDevicesSize(t, size, func(top, bot *record.Device) {
		for i := range 2000 {
			off := int64(rng.IntN(int(size/4096))) * 4096
			p := make([]byte, 4096)
			for k := range p {
				p[k] = byte(rng.IntN(256))
			}
			must(t, top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: 4096, Data: p}, func() error { return bot.WriteAt(p, off, false) }))
			if i%16 == 15 {
				must(t, top.Do(&pclog.Record{Kind: pclog.KindFlush}, bot.Flush))
			}
		}
	})
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		opts := explore.Options{Model: m, Strategy: model.DropK, K: 2, States: 100, Minimize: explore.MinimizeOff}
		start := time.Now()
		plain, err := explore.Explore(context.Background(), explore.Source{Log: l, Devices: []uint16{Bottom}}, opts, nopChecker{}, nil)
		must(t, err)
		pd := time.Since(start)
		start = time.Now()
		rep, chk, err := Run(context.Background(), explore.Source{Log: l}, Config{Model: m}, opts, nil)
		must(t, err)
		ad := time.Since(start)
		if len(rep.Violations) != 0 {
			t.Fatalf("write-through layer flagged: %+v", rep.Violations[0])
		}
		pr, ar := float64(plain.Checked)/pd.Seconds(), float64(rep.Checked)/ad.Seconds()
		t.Logf("%s: plain explore of the bottom: %d states checked in %v (%.0f/s); audit: %d states in %v (%.0f/s), %d sectors each; ratio %.2f",
			m, plain.Checked, pd.Round(time.Millisecond), pr, rep.Checked, ad.Round(time.Millisecond), ar, chk.Sectors(), ar/pr)
	}
}
