package crashtest_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/powercut/powercut/crashtest"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/record"
)

// counterTest is the crash test of a tiny engine: a counter in sector 0, acknowledged after
// each increment. With fua the increment is durable before the ack; without, it is not.
func counterTest(fua bool) crashtest.Test {
	return crashtest.Test{
		Models: []model.Model{model.Reorder},
		Workload: func(w *crashtest.Workload) error {
			for i := uint64(1); i <= 3; i++ {
				b := make([]byte, 512)
				binary.LittleEndian.PutUint64(b, i)
				if err := w.Device(0).WriteAt(b, 0, fua); err != nil {
					return err
				}
				w.Ack(i, fmt.Sprint("count=", i))
			}
			return nil
		},
		Check: func(c *crashtest.Crash) error {
			b := make([]byte, 8)
			if _, err := c.Device(0).ReadAt(b, 0); err != nil {
				return err
			}
			for i := uint64(1); i <= binary.LittleEndian.Uint64(b); i++ {
				c.Found(i) // the counter recovered as n: increments 1..n survived
			}
			return nil
		},
		Oracles: []crashtest.Oracle{crashtest.AckedPresent(), crashtest.NoHole()},
		Jobs:    1,
	}
}

// A counter acknowledged before its write is durable loses acknowledged increments. In a test,
// counterTest(false).Run(t) reports each of these with t.Errorf and a replay command.
func ExampleTest_Explore() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	res, err := counterTest(false).Explore(context.Background(), dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range res.Failures {
		fmt.Printf("%s %s: %s\n", f.StateID, f.Oracle, f.Detail)
	}
	// Output:
	// reorder:0:k- acked-present: op 1 (count=1) was acknowledged before the crash and is lost
	// reorder:1:d2 acked-present: op 2 (count=2) was acknowledged before the crash and is lost
	// reorder:1:k- acked-present: op 1 (count=1) was acknowledged before the crash and is lost
	// reorder:1:k- acked-present: op 2 (count=2) was acknowledged before the crash and is lost
	// reorder:2:d4 acked-present: op 3 (count=3) was acknowledged before the crash and is lost
	// reorder:2:k0 acked-present: op 2 (count=2) was acknowledged before the crash and is lost
	// reorder:2:k0 acked-present: op 3 (count=3) was acknowledged before the crash and is lost
}

// With FUA writes every acknowledged increment survives every crash the reorder model allows.
func ExampleTest_Explore_durable() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	res, err := counterTest(true).Explore(context.Background(), dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := res.Reports[0]
	fmt.Printf("%s: %d crash points, %d distinct states checked, %d violations\n", r.Model, r.CrashPoints, r.Checked, len(res.Failures))
	// Output:
	// reorder: 6 crash points, 7 distinct states checked, 0 violations
}

// Oracles are plain functions of the promises and the recovered state, so they combine and
// can be tested on their own.
func ExampleAllOrNothing() {
	p := &crashtest.Promises{All: []record.Ack{{Ordinal: 1, Name: "tx1"}, {Ordinal: 2, Name: "tx1"}, {Ordinal: 3, Name: "tx2"}}}
	o := crashtest.AllOrNothing(func(a record.Ack) string { return a.Name })
	fmt.Println(o.Check(p, crashtest.Recovered{1: true, 3: true}))
	// Output:
	// [group "tx1" is partly recovered: op 1 (tx1) present, op 2 (tx1) lost]
}
