package model_test

import (
	"testing"

	"github.com/powercut/powercut/model"
)

// Two ops may share a sequence number (A completes at n, B is submitted at n): NewHistory
// accepts such a history. Under the contract "A before B whenever cA < sB", they are then
// concurrent, and the model must either reject the history or treat them as concurrent
// everywhere. Here A and B are both durable (FUA) writes to the same sector, so the only way
// to see A at the end is B applied before A.
func TestHistory_SharedSequenceNumberIsConsistent(t *testing.T) {
	h := rHist([]int{1},
		rFUA(rW(0, 0, 1, 0, 1)), // op0 A: completes at 1
		rFUA(rW(0, 0, 1, 1, 2)), // op1 B: submitted at 1
	)
	ops := h.toModelOps()
	mh, err := model.NewHistory(ops, h.devices())
	if err != nil {
		return // rejecting shared sequence numbers is a fine answer
	}
	for _, m := range []model.Model{model.Reorder, model.Torn} {
		pts := mh.Points(m)
		p := pts[len(pts)-1]
		e := mh.Epoch(m, model.DiscardEither, p)
		ref := refImages(h, m, model.DiscardEither, int(p.T))
		_, ims, _ := implStates(t, h, e, model.EnumOptions{Strategy: model.Exhaustive})
		got := map[refImg]bool{}
		for _, im := range ims {
			got[im] = true
		}
		for im := range ref {
			if !got[im] {
				t.Errorf("%s end: allowed image %s (A and B concurrent: cA == sB) never produced; produced %v", m, im, refImgList(got))
			}
		}
	}
}
