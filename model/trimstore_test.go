package model_test

import (
	"fmt"
	"testing"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// trimStore is the history of a small store that trims the blocks it frees: n transactions over
// a ring of slots; each writes its data to the next slot, flushes, commits a header with a FUA
// write, trims the slot the previous transaction used, and marks the acknowledgement. A freed
// slot is rewritten (and flushed) when the ring comes round to it again. The device starts as
// zeros.
func trimStore(n, slots int) (*model.History, error) {
	const ss, slotSec = 512, 8
	var ops []model.Op
	seq := uint64(0)
	add := func(o model.Op) {
		o.Submit, o.Complete = seq, seq+1
		if o.Kind == pclog.KindMark {
			o.Complete = seq
		}
		seq = o.Complete + 1
		ops = append(ops, o)
	}
	slot := func(i int) int64 { return int64(ss) * (1 + int64(i%slots)*slotSec) }
	for i := 0; i < n; i++ {
		add(model.Op{Kind: pclog.KindWrite, Off: slot(i), Len: ss * slotSec})
		add(model.Op{Kind: pclog.KindFlush})
		add(model.Op{Kind: pclog.KindWrite, Flags: pclog.FlagFUA, Off: 0, Len: ss})
		if i > 0 {
			add(model.Op{Kind: pclog.KindDiscard, Off: slot(i - 1), Len: ss * slotSec})
		}
		add(model.Op{Kind: pclog.KindMark, Name: fmt.Sprintf("txn-%d", i)})
	}
	h, err := model.NewHistory(ops, []pclog.Device{{ID: 0, Name: "disk", Size: int64(ss) * (1 + int64(slots)*slotSec), SectorSize: ss}})
	if err != nil {
		return nil, err
	}
	setZeroBase(h)
	return h, nil
}

// countStates walks every crash point of m and counts the states opt generates.
func countStates(h *model.History, m model.Model, pol model.DiscardPolicy, opt model.EnumOptions) (int, error) {
	n := 0
	w := h.Walk(m, pol)
	for _, p := range h.Points(m) {
		if _, err := w.Epoch(p).States(opt, func(*model.State) bool { n++; return true }); err != nil {
			return n, err
		}
	}
	return n, nil
}

// A DISCARD under policy either settles: once a durable rewrite hides it, or what it would keep
// is zeros, its zero-or-keep choice is no choice. For a store that trims what it frees and
// reuses it at the next transaction, either generates at most 2x the states of zero; with a
// longer ring (a trimmed slot keeps its old data until reused: a real difference) the count
// still grows linearly with the discards.
func TestDiscardEitherSettles_TrimmingStore(t *testing.T) {
	opt := model.EnumOptions{Strategy: model.DropK, K: 2}
	count := map[string]int{}
	for _, slots := range []int{2, 4} {
		for _, n := range []int{60, 120} {
			h, err := trimStore(n, slots)
			if err != nil {
				t.Fatal(err)
			}
			for _, pol := range []model.DiscardPolicy{model.DiscardZero, model.DiscardEither} {
				c, err := countStates(h, model.Reorder, pol, opt)
				if err != nil {
					t.Fatal(err)
				}
				count[fmt.Sprintf("%d/%s/%d", slots, pol, n)] = c
			}
		}
	}
	t.Logf("states (slots/policy/transactions): %v", count)
	for _, n := range []int{60, 120} {
		z, e := count[fmt.Sprintf("2/zero/%d", n)], count[fmt.Sprintf("2/either/%d", n)]
		if e > 2*z {
			t.Errorf("%d transactions: either generates %d states, zero %d: more than 2x", n, e, z)
		}
	}
	for _, slots := range []string{"2", "4"} {
		a, b := count[slots+"/either/60"], count[slots+"/either/120"]
		if r := float64(b) / float64(a); r > 2.2 {
			t.Errorf("ring of %s: either gives %d states for 60 transactions, %d for 120 (x%.2f): not linear in the discards", slots, a, b, r)
		}
	}
}

func BenchmarkTrimmingStore(b *testing.B) {
	for _, slots := range []int{2, 4} {
		for _, n := range []int{60, 120, 240} {
			h, err := trimStore(n, slots)
			if err != nil {
				b.Fatal(err)
			}
			for _, pol := range []model.DiscardPolicy{model.DiscardZero, model.DiscardEither} {
				b.Run(fmt.Sprintf("slots=%d/txns=%d/discard=%s", slots, n, pol), func(b *testing.B) {
					c := 0
					for b.Loop() {
						c, err = countStates(h, model.Reorder, pol, model.EnumOptions{Strategy: model.DropK, K: 2})
						if err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(c), "states")
				})
			}
		}
	}
}
