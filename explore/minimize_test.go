package explore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// A violation found in a state far from "everything landed" minimises to the one deviation that
// matters, and violations that share a cause form one group.
func TestMinimizeAndGroup(t *testing.T) {
	r, path := newRec(t, record.NewMemStore(devSize))
	dev := r.Device(0)
	for i := 0; i < 6; i++ {
		if err := dev.WriteAt(fill(byte(i+1), 512), int64(i)*512, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Mark("done"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The oracle: op 4's block may only be there if op 2's is (a commit record written after
	// its data without a flush between them: the bug the minimal state must point at).
	chk := cheapFunc(func(c *Candidate) []Violation {
		b := make([]byte, 512)
		c.Images[0].ReadAt(b[:1], 2*512)
		d := b[0]
		c.Images[0].ReadAt(b[:1], 4*512)
		if b[0] == 5 && d != 3 {
			return []Violation{{Oracle: "commit", Detail: fmt.Sprintf("block 4 committed, block 2 holds %d", d)}}
		}
		return nil
	})
	rep, err := Explore(context.Background(), Source{Log: l}, Options{Model: model.Reorder, Strategy: model.KeepK, K: 3}, chk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Groups) != 1 || rep.Groups[0].Violations != len(rep.Violations) || len(rep.Violations) < 3 {
		t.Fatalf("%d violations in groups %+v, want one group holding them all", len(rep.Violations), rep.Groups)
	}
	mn := rep.Groups[0].Minimal
	if mn == nil || !mn.Complete || mn.Signature() != "dropped:2" {
		t.Fatalf("minimal %+v, want exactly op 2 dropped", mn)
	}
	if !strings.Contains(mn.Explanation, "op 2 (WRITE 512 B at sector 2) did not land while op 3") || mn.Checks < 2 {
		t.Errorf("explanation %q after %d checks", mn.Explanation, mn.Checks)
	}
	t.Logf("%s -> %s in %d checks: %s", mn.From, mn.StateID, mn.Checks, mn.Explanation)
	// The minimal state ID reproduces the violation on its own.
	_, c, err := Materialize(Source{Log: l}, mn.StateID)
	if err != nil {
		t.Fatal(err)
	}
	if vs, _ := chk.Check(context.Background(), c); len(vs) != 1 {
		t.Errorf("minimal state %s: %v, want the violation", mn.StateID, vs)
	}

	// MaxViolations stops early and says so; an expensive checker is not minimised by default.
	rep, err = Explore(context.Background(), Source{Log: l}, Options{Model: model.Reorder, Strategy: model.KeepK, K: 3, MaxViolations: 1}, checkFunc(chk), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 1 || !rep.StoppedEarly || rep.Groups[0].Minimal != nil {
		t.Errorf("fail fast: %d violations, stopped early %v, minimal %v", len(rep.Violations), rep.StoppedEarly, rep.Groups[0].Minimal)
	}
}

type cheapFunc func(c *Candidate) []Violation

func (f cheapFunc) Check(_ context.Context, c *Candidate) ([]Violation, error) { return f(c), nil }
func (cheapFunc) Cheap() bool                                                  { return true }

func TestMessageClass(t *testing.T) {
	for in, want := range map[string]string{
		"block 11: clean bitmap's slot B has hash 266bdaec2c392e3b, the data hashes to 8bbf7f68e8c3b87c": "block #: clean bitmap's slot B has hash #, the data hashes to #",
		"device 0 block 0x1000: holds version 3 (op 12)":                                                 "device # block #: holds version # (op #)",
		"file-3 missing although fsync-3 was issued\nkernel: ...":                                        "file-# missing although fsync-# was issued",
	} {
		if got := MessageClass(in); got != want {
			t.Errorf("MessageClass(%q) = %q, want %q", in, got, want)
		}
	}
}
