package model_test

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/powercut/powercut/model"
)

// TestStateID_RoundTrip: for states from every strategy of every model, both printed forms
// (Epoch.ID and State.String) resolve to the same crash point, state and image. (The exhaustive
// states are also round-tripped in the TestProp_* tests.)
func TestStateID_RoundTrip(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := refGenHistory(rt, refMaxOps)
		mh := h.toModel(rt)
		m := rapid.SampledFrom([]model.Model{model.Prefix, model.Flush, model.Reorder, model.Torn, model.Coalesce}).Draw(rt, "model")
		pol := rapid.SampledFrom(refPolicies).Draw(rt, "policy")
		opt := rapid.SampledFrom([]model.EnumOptions{
			{Strategy: model.DropK, K: 2}, {Strategy: model.KeepK, K: 2}, {Strategy: model.Sample, Seed: 3, Max: 40},
		}).Draw(rt, "strategy")
		for _, p := range mh.Points(m) {
			e := mh.Epoch(m, pol, p)
			sts, ims, _ := implStates(rt, h, e, opt)
			for k, st := range sts {
				propRoundTrip(rt, h, mh, e, st, ims[k])
			}
		}
	})
}

// stateIDHist: dev0 4 sectors, dev1 2 sectors.
//
//	op0 WRITE dev0 [0,+2) s0 c1          durable (flushed by op2)
//	op1 DISCARD dev0 [2,+1) s2 c3        durable
//	op2 FLUSH dev0 s4 c5
//	op3 WRITE dev0 [0,+3) s6 c8          pending, concurrent with op4
//	op4 WRITE dev0 [1,+2) s7 c9          pending
//	op5 MARK "m" 10
//	op6 WRITE dev1 [0,+1) s11 c12        pending
func stateIDHist() *refHist {
	return rHist([]int{4, 2},
		rW(0, 0, 2, 0, 1),
		rDiscard(0, 2, 1, 2, 3),
		rFlush(0, 4, 5),
		rW(0, 0, 3, 6, 8),
		rW(0, 1, 2, 7, 9),
		rMark("m", 10),
		rW(1, 0, 1, 11, 12),
	)
}

func TestStateID_Valid(t *testing.T) {
	mh := stateIDHist().toModel(t)
	// reorder points: T=5 (before the flush completes), 11 (after the mark), 13 (end).
	for _, id := range []string{
		"reorder:2", "reorder:2:d3", "reorder:2:k6", "reorder:2:k-", "reorder:2:d3.4.6",
		"reorder:2:o3.4", "reorder:2:n1", "reorder/zero:2:d6", "reorder/keep:2",
		"torn:2:t3=0.2", "torn:2:t3=1-2,4=0", "torn:2:d6:t3=0:o3.4:n1",
		"prefix:3", "prefix/zero:3", "flush:0", "coalesce:0",
	} {
		e, st, err := mh.Resolve(id)
		if err != nil {
			t.Errorf("Resolve(%q): %v", id, err)
			continue
		}
		if _, err := e.Image(st); err != nil {
			t.Errorf("Image(%q): %v", id, err)
		}
		// The canonical form resolves to the same state.
		_, st2, err := mh.Resolve(e.ID(st))
		if err != nil || st2.String() != st.String() {
			t.Errorf("%q: canonical %q resolves to %v, %v", id, e.ID(st), st2, err)
		}
	}
	// "k-" (nothing landed) and the "d" list of every pending op are the same state.
	_, a, _ := mh.Resolve("reorder:2:k-")
	_, b, _ := mh.Resolve("reorder:2:d3.4.6")
	if a == nil || b == nil || a.String() != b.String() {
		t.Errorf("k- and d3.4.6 differ: %v vs %v", a, b)
	}
}

func TestStateID_MalformedParse(t *testing.T) {
	for _, id := range []string{
		"", "reorder", ":", "bogus:0", "reorder:-1", "reorder:x", "reorder:1e3", "reorder:0:",
		"reorder:0::d1", "reorder:0:d", "reorder:0:d1:d2", "reorder:0:d1:k2", "reorder:0:k1:d2",
		"reorder:0:z1", "reorder:0:d-1", "reorder:0:d1..2", "reorder:0:dx", "reorder:0:k",
		"torn:0:t0", "torn:0:t0=", "torn:0:t=1", "torn:0:t0=3-1", "torn:0:t0=1,0=2", "torn:0:t0=1-",
		"torn:0:t0=-1", "torn:0:t0=99999999", "torn:0:t-1=0",
		"reorder:0:o1.1", "reorder:0:o2.1", "reorder:0:o1", "reorder:0:o1.2.3", "reorder:0:o1.2,",
		"coalesce:0:c0", "coalesce:0:c0=x", "coalesce:0:c=1", "coalesce:0:c0=-1",
		"reorder/either:0", "reorder/:0", "reorder/bogus:0", "/zero:0", "Reorder:0",
		"reorder:0:n", "reorder:0:n1:n2",
	} {
		if st, err := model.ParseState(id); err == nil {
			t.Errorf("ParseState(%q) = %q, want an error", id, st)
		}
	}
}

func TestStateID_MalformedResolve(t *testing.T) {
	mh := stateIDHist().toModel(t)
	for _, id := range []string{
		"reorder:3",         // no such point
		"prefix:99",         // no such point
		"reorder:2:d0",      // op0 durable
		"reorder:2:d2",      // a flush
		"reorder:2:d5",      // a mark
		"reorder:2:d42",     // no such op
		"reorder:0:d6",      // op6 not submitted at T=5
		"reorder:2:k0",      // k names a durable op
		"reorder:2:t3=0",    // torn in reorder
		"torn:2:t3=0-2",     // every sector: not a proper subset
		"torn:2:t3=5",       // beyond the op
		"torn:2:t6=0",       // single-sector op6 cannot tear (whole set)
		"torn:2:d3:t3=0",    // torn and dropped
		"torn:2:t0=0",       // durable op torn
		"reorder:2:o0.3",    // not concurrent (op0 completed before op3 was submitted)
		"reorder:2:o3.6",    // other device
		"reorder:2:n0",      // not a discard
		"reorder/zero:2:n1", // discard choice closed under policy zero
		"reorder:2:c3=4",    // carry outside coalesce
		"prefix:3:d0",       // prefix has no choices but discards
		"prefix:3:o3.4",     // nor flips
		"coalesce:0:c3=4",   // different ranges
		"coalesce:0:c4=3",   // earlier write
	} {
		if _, st, err := mh.Resolve(id); err == nil {
			t.Errorf("Resolve(%q) = %v, want an error", id, st)
		} else if strings.Contains(err.Error(), "does not exist") != strings.HasSuffix(id, ":3") && !strings.HasPrefix(id, "prefix:99") {
			t.Errorf("Resolve(%q) fails for the wrong reason: %v", id, err)
		}
	}
}

// FuzzParseState: parsing never panics; an accepted ID prints back to a form that parses to the
// same print; resolving it against a small history never panics, and a resolved state has an
// image and a canonical ID that resolves to it.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{
		"reorder:2", "reorder:2:d3.4.6", "reorder:2:k-", "reorder:2:k3", "torn:2:t3=0.2,4=1:o3.4:n1",
		"reorder/zero:2:d6", "coalesce:8:c0=3", "prefix:0", "flush:1", "torn:0:t0=1-3.5",
		"reorder:0:o1.2,3.4", "coalesce:0:c1=2,3=4",
	} {
		f.Add(s)
	}
	mh := stateIDHist().toModel(f)
	f.Fuzz(func(t *testing.T, id string) {
		st, err := model.ParseState(id)
		if err != nil {
			return
		}
		s := st.String()
		st2, err := model.ParseState(s)
		if err != nil {
			t.Fatalf("ParseState(%q) ok, but its String %q does not parse: %v", id, s, err)
		}
		if st2.String() != s {
			t.Fatalf("%q -> %q -> %q", id, s, st2.String())
		}
		e, rst, err := mh.Resolve(id)
		if err != nil {
			return
		}
		if _, err := e.Image(rst); err != nil {
			t.Fatalf("Resolve(%q) ok but Image fails: %v", id, err)
		}
		_, rst2, err := mh.Resolve(e.ID(rst))
		if err != nil || rst2.String() != rst.String() {
			t.Fatalf("Resolve(%q) = %q; its ID %q resolves to %v, %v", id, rst, e.ID(rst), rst2, err)
		}
	})
}

// A "k" form parses into a State that is resolved later; until then its String must not name a
// different state. ParseState("reorder:2:k6").String() printing "reorder:2" (everything landed)
// would send a user who copies it to the opposite state.
func TestStateID_ParsedKFormPrintsItself(t *testing.T) {
	mh := stateIDHist().toModel(t)
	for _, id := range []string{"reorder:2:k6", "reorder:2:k-", "torn:2:k3:t3=0"} {
		st, err := model.ParseState(id)
		if err != nil {
			t.Fatalf("ParseState(%q): %v", id, err)
		}
		_, want, err := mh.Resolve(id)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", id, err)
		}
		_, got, err := mh.Resolve(st.String())
		if err != nil || got.String() != want.String() {
			t.Errorf("ParseState(%q).String() = %q resolves to %v (err %v), but %q is %q", id, st.String(), got, err, id, want.String())
		}
	}
}
