package explore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// sectorZero is a checker: it reads the first byte of device 0 and wants the version the last
// mark promised.
type sectorZero map[string]byte

func (want sectorZero) Check(_ context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	b := make([]byte, 1)
	if _, err := c.Images[0].ReadAt(b, 0); err != nil {
		return nil, err
	}
	if b[0] < want[c.LastMark] {
		return []explore.Violation{{Oracle: "version", Detail: fmt.Sprintf("version %d, %s promised %d", b[0], c.LastMark, want[c.LastMark])}}, nil
	}
	return nil, nil
}

// Reads declares that the verdict depends on the image and the last mark only.
func (sectorZero) Reads() explore.Reads { return explore.ReadsLastMark }

// Explore every state a power cut may leave under the reorder model: version 2 was promised
// without a FLUSH, so a state where it did not land breaks the promise.
func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "w.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: 64 << 10, SectorSize: 512}}}
	rec, _ := record.Create(path, h, []record.Store{record.NewMemStore(64 << 10)})
	d := rec.Device(0)
	_ = d.WriteAt(version(1), 0, false)
	_ = d.Flush()
	_ = rec.Mark("v1")
	_ = d.WriteAt(version(2), 0, false) // no FLUSH before the promise
	_ = rec.Mark("v2")
	_ = rec.Close()

	l, _ := pclog.Open(path)
	defer l.Close()
	opts := explore.Options{Model: model.Reorder, Strategy: model.Exhaustive}
	rep, err := explore.Explore(context.Background(), explore.Source{Log: l}, opts, sectorZero{"v1": 1, "v2": 2}, func(f explore.Found) {
		fmt.Printf("state %s after mark %s: %s: %s\n", f.StateID, f.LastMark, f.Oracle, f.Detail)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d crash points, %d states, %d distinct checked, %d bad\n", rep.CrashPoints, rep.States, rep.Checked, rep.BadStates)
	// Output:
	// state reorder:2:k- after mark v2: version: version 1, v2 promised 2
	// 3 crash points, 5 states, 5 distinct checked, 1 bad
}

// version is a sector holding version v in its first byte.
func version(v byte) []byte {
	p := make([]byte, 512)
	p[0] = v
	return p
}
