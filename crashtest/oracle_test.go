package crashtest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/powercut/powercut/crashtest"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/record"
)

func acks(names ...string) []record.Ack {
	var out []record.Ack
	for i, n := range names {
		out = append(out, record.Ack{Ordinal: uint64(i + 1), Name: n})
	}
	return out
}

func set(ords ...uint64) crashtest.Recovered {
	r := crashtest.Recovered{}
	for _, o := range ords {
		r[o] = true
	}
	return r
}

func TestOracles(t *testing.T) {
	all := acks("a", "b", "tx", "tx", "c")
	p := &crashtest.Promises{Acked: all[:2], All: all}
	tx := crashtest.AllOrNothing(func(a record.Ack) string {
		if a.Name == "tx" {
			return "tx"
		}
		return ""
	})
	for _, tc := range []struct {
		o    crashtest.Oracle
		got  crashtest.Recovered
		want []string // substrings, one per message
	}{
		{crashtest.AckedPresent(), set(1, 2), nil},
		{crashtest.AckedPresent(), set(1, 3), []string{"op 2 (b) was acknowledged before the crash and is lost"}},
		{crashtest.AckedPresent(), set(), []string{"op 1 (a)", "op 2 (b)"}},
		{crashtest.NoHole(), set(1, 2, 3), nil},
		{crashtest.NoHole(), set(), nil},
		{crashtest.NoHole(), set(1, 3, 5), []string{"op 3 (tx) survived but op 2 (b), acknowledged before it, is lost (and 1 later operations survived too)"}},
		{tx, set(1, 2), nil},
		{tx, set(3, 4), nil},
		{tx, set(4), []string{`group "tx" is partly recovered: op 4 (tx) present, op 3 (tx) lost`}},
		{crashtest.NoPhantom(), set(1, 5), nil},
		{crashtest.NoPhantom(), set(1, 9, 7), []string{"recovered operations [7 9] the workload never acknowledged"}},
	} {
		got := tc.o.Check(p, tc.got)
		ok := len(got) == len(tc.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.Contains(got[i], tc.want[i])
		}
		if !ok {
			t.Errorf("%s on %v: %q, want %q", tc.o.Name(), keys(tc.got), got, tc.want)
		}
	}
}

func keys(r crashtest.Recovered) []uint64 {
	var out []uint64
	for k := range r {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// A batch committed by one head update is all-or-nothing; committing it record by record is
// caught by AllOrNothing (and only by it: each record alone is durable before its ack).
func TestAllOrNothingBatch(t *testing.T) {
	batchTest := func(perRecord bool) crashtest.Test {
		return crashtest.Test{
			Models: []model.Model{model.Reorder},
			Workload: func(w *crashtest.Workload) error {
				wal := newWAL(w.Device(0), walCorrect)
				for b := uint64(0); b < 3; b++ {
					first := 1 + 2*b
					p := [][]byte{fmt.Appendf(nil, "record %d", first), fmt.Appendf(nil, "record %d", first+1)}
					var err error
					if perRecord {
						err = wal.Append(first, p[0])
						if err == nil {
							err = wal.Append(first+1, p[1])
						}
					} else {
						err = wal.AppendBatch(first, p...)
					}
					if err != nil {
						return err
					}
					name := fmt.Sprint("batch ", b)
					w.Ack(first, name)
					w.Ack(first+1, name)
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
			Oracles: []crashtest.Oracle{crashtest.AckedPresent(), crashtest.NoHole(),
				crashtest.AllOrNothing(func(a record.Ack) string { return a.Name })},
		}
	}
	batchTest(false).Run(t)
	res, err := batchTest(true).Explore(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) == 0 {
		t.Fatal("a batch committed record by record was not caught")
	}
	for _, f := range res.Failures {
		if f.Oracle != "all-or-nothing" {
			t.Errorf("unexpected %s", f)
		}
	}
}
