package crashtest_test

import (
	"fmt"
	"testing"

	"github.com/powercut/powercut/crashtest"
	"github.com/powercut/powercut/model"
)

// TestWALCrash is the smallest complete crash test of the toy WAL (workload + oracle): the
// package documentation's example, measured in the closing note. Lines from func to }: 24.
func TestWALCrash(t *testing.T) {
	crashtest.Test{
		Models: []model.Model{model.Reorder, model.Torn},
		Workload: func(w *crashtest.Workload) error {
			wal := newWAL(w.Device(0), walCorrect)
			for i := uint64(1); i <= 8; i++ {
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
				c.Found(r.Seq)
			}
			return err
		},
		Oracles: []crashtest.Oracle{crashtest.AckedPresent(), crashtest.NoHole()},
	}.Run(t)
}
