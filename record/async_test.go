package record

import (
	"bytes"
	"errors"
	"testing"

	"github.com/powercut/powercut/pclog"
)

// Submit takes the submit point at once, the completion at Wait; the store sees the data at
// Submit; Wait twice records once.
func TestSubmitInFlight(t *testing.T) {
	r, path := newTestRecorder(t, t.TempDir())
	d := r.Device(0)
	a, err := d.Submit(Write(bytes.Repeat([]byte{1}, 512), 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.Submit(FlushOp())
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	if _, err := d.ReadAt(got, 0); err != nil || got[0] != 1 {
		t.Fatalf("store after Submit: %v %v", got, err)
	}
	if r.Records() != 0 {
		t.Fatalf("%d records before any Wait", r.Records())
	}
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != 2 {
		t.Fatalf("%d entries, want 2", len(l.Entries))
	}
	fl, w := l.Entries[0], l.Entries[1]
	if fl.Kind != pclog.KindFlush || w.Kind != pclog.KindWrite || !(w.Submit < fl.Submit && fl.Submit < w.Complete) {
		t.Errorf("flush %+v and write %+v are not in flight together", fl, w)
	}
}

// A submitted operation never waited for is reported at Close.
func TestSubmitNotCompleted(t *testing.T) {
	r, _ := newTestRecorder(t, t.TempDir())
	if _, err := r.Device(0).Submit(Write(make([]byte, 512), 0, pclog.FlagFUA)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, ErrNotCompleted) {
		t.Errorf("Close: %v, want ErrNotCompleted", err)
	}
}

// Submit validates like the synchronous calls, and rejects marks.
func TestSubmitInvalid(t *testing.T) {
	r, _ := newTestRecorder(t, t.TempDir())
	defer r.Close()
	d := r.Device(0)
	for _, op := range []Op{
		Write(make([]byte, 100), 0, 0),
		Write(make([]byte, 512), 1<<20, 0),
		{Kind: pclog.KindDiscard, Offset: 0, Length: 0},
		{Kind: pclog.KindMark},
	} {
		if _, err := d.Submit(op); err == nil {
			t.Errorf("%+v accepted", op)
		}
	}
}

// WritePreflush records a WRITE with PREFLUSH (and FUA when asked), synced.
func TestWritePreflush(t *testing.T) {
	r, path := newTestRecorder(t, t.TempDir())
	d := r.Device(0)
	if err := d.WritePreflush(bytes.Repeat([]byte{9}, 1024), 512, true); err != nil {
		t.Fatal(err)
	}
	if err := d.WritePreflush(bytes.Repeat([]byte{8}, 512), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := []pclog.Flags{pclog.FlagPreflush | pclog.FlagFUA, pclog.FlagPreflush}
	for i, e := range l.Entries {
		if e.Kind != pclog.KindWrite || e.Flags != want[i] {
			t.Errorf("entry %d: %s %s, want WRITE %s", i, e.Kind, e.Flags, want[i])
		}
	}
}

// Acks are marks that parse back to their ordinal and name; an ordinal is acknowledged once.
func TestAck(t *testing.T) {
	r, path := newTestRecorder(t, t.TempDir())
	for _, a := range []Ack{{1, "put k1"}, {7, ""}, {3, "with:colon"}} {
		if err := r.Ack(a.Ordinal, a.Name); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Ack(7, "again"); !errors.Is(err, ErrDuplicateAck) {
		t.Errorf("second ack of 7: %v", err)
	}
	if err := r.Mark("plain"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acks, idx := Acks(l)
	if len(acks) != 3 || acks[0] != (Ack{1, "put k1"}) || acks[1] != (Ack{7, ""}) || acks[2] != (Ack{3, "with:colon"}) {
		t.Errorf("acks %v", acks)
	}
	if len(idx) != 3 || idx[2] != 2 {
		t.Errorf("indices %v", idx)
	}
	for _, bad := range []string{"plain", "ack:", "ack:x", "ack:+1", "ack:-1:n", "Ack:1"} {
		if a, ok := ParseAck(bad); ok {
			t.Errorf("ParseAck(%q) = %v", bad, a)
		}
	}
}
