package verify

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

const recSize = 16 * tbs

// recordWorkload runs a verify workload through an in-process recorder and returns the log and
// track file paths.
func recordWorkload(t *testing.T, lie bool) (logPath, track string) {
	t.Helper()
	dir := t.TempDir()
	logPath, track = filepath.Join(dir, "v.pclog"), filepath.Join(dir, "v.track")
	rec, err := record.Create(logPath, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: recSize, SectorSize: 512}}},
		[]record.Store{record.NewMemStore(recSize)})
	if err != nil {
		t.Fatal(err)
	}
	tgt := &RecordTarget{Dev: rec.Device(0), LieAboutFlush: lie}
	res, err := Run(context.Background(), tgt, Config{Mode: "randrwt", Mix: &Mix{R: 30, W: 55, T: 5, Z: 10}, Ops: 120, IODepth: 4, Seed: 11,
		FsyncEvery: 6, TrackFile: track, VerifyAll: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailureCount != 0 {
		t.Fatalf("live run failed: %v", details(res))
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	return logPath, track
}

func exploreLog(t *testing.T, logPath, track string, m model.Model) *explore.Report {
	t.Helper()
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	chk, err := NewExploreChecker(track)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := explore.Explore(context.Background(), explore.Source{Log: l}, explore.Options{Model: m, Strategy: "drop-k", K: 1, Jobs: 2}, chk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked == 0 {
		t.Fatalf("model %s: no state checked", m)
	}
	return rep
}

func TestExploreCorrectDevice(t *testing.T) {
	logPath, track := recordWorkload(t, false)
	for _, m := range []model.Model{model.Flush, model.Reorder, model.Torn, model.Prefix} {
		rep := exploreLog(t, logPath, track, m)
		if len(rep.Violations) != 0 {
			t.Fatalf("model %s: %d violations on a correct device, first: %+v", m, len(rep.Violations), rep.Violations[0])
		}
		t.Logf("model %s: %d points, %d states checked, no violation", m, rep.CrashPoints, rep.Checked)
	}
}

func TestExploreLyingDevice(t *testing.T) {
	logPath, track := recordWorkload(t, true)
	rep := exploreLog(t, logPath, track, model.Reorder)
	if len(rep.Violations) == 0 {
		t.Fatalf("a device that acknowledges FLUSH without persisting was not caught (%d states)", rep.Checked)
	}
	v := rep.Violations[0]
	if v.Oracle != OracleFlush || !strings.Contains(v.Detail, "lost a flushed write") {
		t.Fatalf("violation %+v, want a lost flushed write", v)
	}
	t.Logf("%d violations, first: %s: %s", len(rep.Violations), v.StateID, v.Detail)
}

// TestExploreCheckerModel hands the checker an image the model does not allow: the end state of
// the log with one block rolled back to an older version that a durable write superseded.
func TestExploreCheckerModel(t *testing.T) {
	logPath, track := recordWorkload(t, false)
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h, err := model.FromLog(l)
	if err != nil {
		t.Fatal(err)
	}
	pts := h.Points(model.Reorder)
	imgs, cand, err := explore.Materialize(explore.Source{Log: l}, fmt.Sprintf("reorder:%d", pts[len(pts)-1].Index))
	if err != nil {
		t.Fatal(err)
	}
	good := imgs[0]
	buf := make([]byte, recSize)
	if _, err := good.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	// Find a block with at least two versions in the log and put the first one back.
	var victim int64 = -1
	var old []byte
	seen := map[int64][]byte{}
	for i, en := range l.Entries {
		if en.Kind != pclog.KindWrite {
			continue
		}
		d := make([]byte, tbs)
		l.ReadData(i, d, 0)
		if first, ok := seen[en.Offset]; ok && !bytes.Equal(buf[en.Offset:en.Offset+tbs], first) {
			victim, old = en.Offset, first
			break
		}
		seen[en.Offset] = d
	}
	if victim < 0 {
		t.Fatal("no block written twice")
	}
	copy(buf[victim:], old)
	cand.Images = map[uint16]*image.Image{0: image.New(recSize, bytes.NewReader(buf), nil, nil)}
	chk, err := NewExploreChecker(track)
	if err != nil {
		t.Fatal(err)
	}
	viols, err := chk.Check(context.Background(), cand)
	if err != nil {
		t.Fatal(err)
	}
	if len(viols) != 1 || viols[0].Oracle != OracleModel || !strings.Contains(viols[0].Detail, "the model allows") {
		t.Fatalf("rolled-back block: %+v", viols)
	}
	t.Log(viols[0].Detail)
	// The untouched image passes.
	cand.Images[0] = good
	if viols, err := chk.Check(context.Background(), cand); err != nil || len(viols) != 0 {
		t.Fatalf("end state: %v %+v", err, viols)
	}
}
