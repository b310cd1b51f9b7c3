package crashtest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// TestWALCrashWithoutCrashtest is TestWALCrash written with record and explore directly: what
// a crash test took before package crashtest (measured in the closing note: the code from
// "func TestWALCrashWithoutCrashtest" to the end of the file).
func TestWALCrashWithoutCrashtest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "wal", Size: 1 << 20, SectorSize: 512}}}
	rec, err := record.Create(path, h, []record.Store{record.NewMemStore(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	wal := newWAL(rec.Device(0), walCorrect)
	for i := uint64(1); i <= 8; i++ {
		if err := wal.Append(i, fmt.Appendf(nil, "record %d", i)); err != nil {
			t.Fatal(err)
		}
		if err := rec.Mark(fmt.Sprintf("ack-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		opts := explore.Options{Model: m, States: 64, Jobs: 4}
		_, err := explore.Explore(context.Background(), explore.Source{Log: l}, opts, walChecker{}, func(f explore.Found) {
			t.Errorf("%s: state %s: %s: %s\n\treplay: powercut replay --log %s --state %s --out crash.img",
				m, f.StateID, f.Oracle, f.Detail, path, f.StateID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

type walChecker struct{}

func (walChecker) Reads() explore.Reads { return explore.ReadsLastMark }

func (walChecker) Check(_ context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	acked := uint64(0)
	if n, ok := strings.CutPrefix(c.LastMark, "ack-"); ok {
		v, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			return nil, err
		}
		acked = v
	}
	img := c.Images[0]
	recs, err := openWAL(crashDisk{record.NewCOWStore(img, img.Size())})
	if err != nil {
		return []explore.Violation{{Oracle: "recover", Detail: err.Error()}}, nil
	}
	var out []explore.Violation
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			out = append(out, explore.Violation{Oracle: "no-hole", Detail: fmt.Sprintf("record %d at %d", r.Seq, i+1)})
		}
	}
	if uint64(len(recs)) < acked {
		out = append(out, explore.Violation{Oracle: "acked-present", Detail: fmt.Sprintf("%d records, %d acknowledged", len(recs), acked)})
	}
	return out, nil
}
