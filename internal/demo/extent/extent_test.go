package extent

import (
	"bytes"
	"testing"

	"github.com/powercut/powercut/record"
)

func block(b, v byte) []byte { return bytes.Repeat([]byte{b*16 + v + 1}, 512) }

func TestLayoutTailSpansSectors(t *testing.T) {
	for _, p := range []Profile{ProfileCrucible, ProfileHardened} {
		l, err := Options{Profile: p, Blocks: 16}.withDefaults().Layout()
		if err != nil {
			t.Fatal(err)
		}
		if l.MetaOff%l.SectorSize != 0 || l.BitmapOff/l.SectorSize == l.MetaOff/l.SectorSize || l.TailLen() < 2*l.SectorSize {
			t.Errorf("%s: tail %+v does not span a sector boundary", p, l)
		}
		if l.TailOff < l.SlotOff(l.Blocks-1, SlotB)+l.SlotSize {
			t.Errorf("%s: tail overlaps the slots", p)
		}
	}
	l, _ := Options{Profile: ProfileHardened, Blocks: 16}.withDefaults().Layout()
	for b := int64(0); b < l.Blocks; b++ {
		for s := SlotA; s <= SlotB; s++ {
			o := l.SlotOff(b, s)
			if o/512 != (o+l.SlotSize-1)/512 {
				t.Errorf("hardened slot %d%s straddles a sector", b, s)
			}
		}
	}
}

func TestWriteFlushReopen(t *testing.T) {
	for _, p := range []Profile{ProfileCrucible, ProfileHardened} {
		opt := Options{Profile: p, Blocks: 16}
		l, _ := opt.withDefaults().Layout()
		st := record.NewMemStore(l.Size)
		dev := StoreDevice{st}
		e, err := Create(dev, opt)
		if err != nil {
			t.Fatal(err)
		}
		for v := byte(0); v < 2; v++ { // back-to-back rewrite: a bonus sync in both profiles
			if err := e.Write(9, block(9, v)); err != nil {
				t.Fatal(err)
			}
		}
		for v := byte(0); v < 3; v++ { // three versions without a flush
			for _, b := range []int64{1, 5, 6} {
				if err := e.Write(b, block(byte(b), v)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if e.Stats.BonusSyncs == 0 {
			t.Errorf("%s: no bonus sync for rewritten blocks", p)
		}
		check := func(e *Extent, what string) {
			t.Helper()
			probs, err := e.Validate()
			if err != nil || len(probs) > 0 {
				t.Fatalf("%s %s: %v %v", p, what, probs, err)
			}
			for _, b := range []int64{1, 5, 6} {
				d, _ := e.Read(b)
				if !bytes.Equal(d, block(byte(b), 2)) {
					t.Errorf("%s %s: block %d is not the last version", p, what, b)
				}
			}
		}
		// Dirty reopen: rehash.
		e2, err := Open(dev, opt, true)
		if err != nil {
			t.Fatal(err)
		}
		if e2.OpenedClean || !e2.Dirty() {
			t.Errorf("%s: dirty extent opened clean", p)
		}
		check(e2, "dirty open")
		if err := e2.Flush(7); err != nil {
			t.Fatal(err)
		}
		e3, err := Open(dev, opt, true)
		if err != nil {
			t.Fatal(err)
		}
		if !e3.OpenedClean || e3.FlushNumber() != 7 {
			t.Errorf("%s: clean open: clean=%v flush=%d", p, e3.OpenedClean, e3.FlushNumber())
		}
		check(e3, "clean open")
	}
}

// A torn tail (new metadata sector, old bitmap sector) is caught by the CRC; with P4 the stale
// bitmap is trusted.
func TestTornTailCRC(t *testing.T) {
	for _, bug := range []Bug{BugNone, BugP4} {
		opt := Options{Profile: ProfileHardened, Bug: bug, Blocks: 16}
		l, _ := opt.withDefaults().Layout()
		st := record.NewMemStore(l.Size)
		dev := StoreDevice{st}
		e, err := Create(dev, opt)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Write(3, block(3, 0)); err != nil {
			t.Fatal(err)
		}
		oldBitmap := make([]byte, l.MetaOff-l.TailOff)
		st.ReadAt(oldBitmap, l.TailOff)
		if err := e.Flush(1); err != nil {
			t.Fatal(err)
		}
		st.WriteAt(oldBitmap, l.TailOff) // the bitmap sector of the flush never landed
		e2, err := Open(dev, opt, true)
		if err != nil {
			t.Fatal(err)
		}
		probs, _ := e2.Validate()
		if bug == BugNone && (!e2.TornTail || len(probs) > 0) {
			t.Errorf("hardened: torn tail not detected (torn=%v, problems %v)", e2.TornTail, probs)
		}
		if bug == BugP4 && len(probs) == 0 {
			t.Errorf("P4: stale bitmap trusted but no problem found")
		}
	}
}
