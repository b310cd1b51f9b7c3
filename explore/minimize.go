package explore

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Deviation is one way a crash state differs from the state where every operation submitted
// before its crash point landed whole, in completion order, discards read as zeros: the choices
// a state ID spells out, one at a time.
type Deviation struct {
	// Kind: "dropped" (Op did not land), "torn" (only Sectors of Op landed), "ignored" (the
	// device kept the old data under discard Op), "flipped" (Op and Other landed in the order
	// opposite to their completion), "carried" (Op holds the content of the later write Other),
	// "cut" (coalesce: the device stopped persisting before Op, so Op and every later
	// possibly-persisted op did not land).
	Kind    string     `json:"kind"`
	Op      int        `json:"op"`
	Other   int        `json:"other,omitempty"`
	Sectors model.Mask `json:"-"`
	Torn    string     `json:"sectors,omitempty"`
}

// Minimal is the result of minimising one violating state.
type Minimal struct {
	// StateID is a state with a 1-minimal set of deviations that still shows the violation (same
	// oracle, same message class), at the earliest crash point found that shows it.
	StateID    string      `json:"state"`
	From       string      `json:"from_state"`
	Deviations []Deviation `json:"deviations"`
	// Explanation says in one sentence what went wrong, naming the operations.
	Explanation string `json:"explanation"`
	// Checks is the number of checker runs spent; Complete is false when the budget ran out
	// before 1-minimality was shown.
	Checks   int  `json:"checks"`
	Complete bool `json:"complete"`
	// Where says, per deviation, what the operation's blocks hold (a file's data, the journal, an
	// inode table...), when the caller could tell (internal/explain on file-system images).
	Where []string `json:"where,omitempty"`
	// Violation is what the checker reported on the minimal state.
	Violation Violation `json:"violation"`
	Reason    string    `json:"crash_point"`
	// CrashSeq is the crash point's position in the recording's global order (events numbered
	// below it happened).
	CrashSeq uint64 `json:"crash_seq"`
	LastMark string `json:"last_mark,omitempty"`
}

// Signature identifies the deviation set (for grouping).
func (m *Minimal) Signature() string {
	var parts []string
	for _, d := range m.Deviations {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, " ")
}

func (d Deviation) String() string {
	switch d.Kind {
	case "torn":
		return fmt.Sprintf("torn:%d=%s", d.Op, d.Torn)
	case "flipped", "carried":
		return fmt.Sprintf("%s:%d.%d", d.Kind, d.Op, d.Other)
	}
	return fmt.Sprintf("%s:%d", d.Kind, d.Op)
}

// deviations lists the choices of st at epoch e.
func deviations(e *model.Epoch, st *model.State) []Deviation {
	var out []Deviation
	if e.M == model.Coalesce && len(st.Dropped) > 0 {
		out = append(out, Deviation{Kind: "cut", Op: st.Dropped[0]})
	} else {
		for _, i := range st.Dropped {
			out = append(out, Deviation{Kind: "dropped", Op: i})
		}
	}
	for _, i := range slices.Sorted(maps.Keys(st.Torn)) {
		out = append(out, Deviation{Kind: "torn", Op: i, Sectors: st.Torn[i], Torn: st.Torn[i].String()})
	}
	for _, i := range st.KeepDiscards {
		out = append(out, Deviation{Kind: "ignored", Op: i})
	}
	for _, p := range st.Flips {
		out = append(out, Deviation{Kind: "flipped", Op: p[0], Other: p[1]})
	}
	for _, i := range slices.Sorted(maps.Keys(st.Carry)) {
		out = append(out, Deviation{Kind: "carried", Op: i, Other: st.Carry[i]})
	}
	return out
}

// stateOf builds the state of epoch e with exactly the deviations ds (nil when e does not offer
// them).
func stateOf(e *model.Epoch, ds []Deviation) *model.State {
	st := &model.State{Model: e.M, Policy: e.Policy, Point: e.Point.Index}
	for _, d := range ds {
		switch d.Kind {
		case "dropped":
			st.Dropped = append(st.Dropped, d.Op)
		case "cut":
			for _, i := range e.Pending {
				if i >= d.Op {
					st.Dropped = append(st.Dropped, i)
				}
			}
		case "torn":
			if st.Torn == nil {
				st.Torn = map[int]model.Mask{}
			}
			st.Torn[d.Op] = d.Sectors
		case "ignored":
			st.KeepDiscards = append(st.KeepDiscards, d.Op)
		case "flipped":
			st.Flips = append(st.Flips, [2]int{d.Op, d.Other})
		case "carried":
			if st.Carry == nil {
				st.Carry = map[int]int{}
			}
			st.Carry[d.Op] = d.Other
		}
	}
	st.Normalize()
	if e.Check(st) != nil {
		return nil
	}
	if _, err := e.Overlay(st); err != nil { // flips without a real order
		return nil
	}
	return st
}

// Class is the message class of a violation: its detail and, when the checker said more (a
// check script's first line of output), that line, numbers replaced by '#' (MessageClass).
func (v Violation) Class() string {
	c := MessageClass(v.Detail)
	if out := strings.TrimSpace(v.Output); out != "" {
		c += " | " + MessageClass(out)
	}
	return c
}

var numberRE = regexp.MustCompile(`\b(0x[0-9a-fA-F]+|[0-9a-fA-F]*[0-9][0-9a-fA-F]*)\b`)

// MessageClass is a violation's detail with its numbers (blocks, versions, hashes, op indices)
// replaced by '#': violations of one class say the same thing about different places.
func MessageClass(detail string) string {
	if i := strings.IndexByte(detail, '\n'); i >= 0 {
		detail = detail[:i]
	}
	return numberRE.ReplaceAllString(detail, "#")
}

// minimizer runs the delta debugging of one violation.
type minimizer struct {
	ctx    context.Context
	src    *Source
	h      *model.History
	chk    Checker
	oracle string
	class  string
	budget int
	checks int
	last   Violation
}

// shows reports whether the state of e with deviations ds shows the violation.
func (m *minimizer) shows(e *model.Epoch, ds []Deviation) (bool, error) {
	if m.checks >= m.budget {
		return false, errBudget
	}
	st := stateOf(e, ds)
	if st == nil {
		return false, nil
	}
	ext, err := e.Overlay(st)
	if err != nil {
		return false, nil
	}
	c := &Candidate{ID: e.ID(st), Model: e.M, Point: e.Point, LastMark: e.Point.LastMark, CoveredMarks: e.CoveredMarks(st),
		Reason: e.Point.Reason, Images: images(m.src, m.h, ext), Log: m.src.Log, Bases: m.src.Bases, epoch: e, state: st}
	m.checks++
	vs, err := m.chk.Check(m.ctx, c)
	if err != nil {
		return false, err
	}
	for _, v := range vs {
		if v.Oracle == m.oracle && v.Class() == m.class {
			m.last = v
			return true, nil
		}
	}
	return false, nil
}

var errBudget = fmt.Errorf("minimisation budget spent")

// ddmin reduces ds to a 1-minimal subset that still shows the violation (Zeller's delta
// debugging), within the budget.
func (m *minimizer) ddmin(e *model.Epoch, ds []Deviation) ([]Deviation, error) {
	if ok, err := m.shows(e, nil); err != nil || ok {
		return nil, err
	}
	n := 2
	for len(ds) >= 2 {
		chunks := split(ds, n)
		reduced := false
		for _, c := range chunks {
			ok, err := m.shows(e, c)
			if err != nil {
				return ds, err
			}
			if ok {
				ds, n, reduced = c, 2, true
				break
			}
		}
		if !reduced && n > 2 {
			for k := range chunks {
				comp := complement(chunks, k)
				ok, err := m.shows(e, comp)
				if err != nil {
					return ds, err
				}
				if ok {
					ds, n, reduced = comp, max(n-1, 2), true
					break
				}
			}
		}
		if !reduced {
			if n >= len(ds) {
				break
			}
			n = min(2*n, len(ds))
		}
	}
	return ds, nil
}

func split(ds []Deviation, n int) [][]Deviation {
	var out [][]Deviation
	for k := 0; k < n; k++ {
		a, b := k*len(ds)/n, (k+1)*len(ds)/n
		if a < b {
			out = append(out, ds[a:b:b])
		}
	}
	return out
}

func complement(chunks [][]Deviation, skip int) []Deviation {
	var out []Deviation
	for k, c := range chunks {
		if k != skip {
			out = append(out, c...)
		}
	}
	return out
}

// Minimize finds, for violation f of candidate c, a 1-minimal set of deviations from "everything
// landed" that still shows a violation of the same oracle and message class, then the earliest
// crash point of the same model that shows it with those deviations. budget bounds the checker
// runs (0: 64).
func Minimize(ctx context.Context, src Source, chk Checker, c *Candidate, v Violation, budget int) (*Minimal, error) {
	h, err := history(&src)
	if err != nil {
		return nil, err
	}
	return minimize(ctx, &src, h, chk, c, v, budget)
}

func minimize(ctx context.Context, src *Source, h *model.History, chk Checker, c *Candidate, v Violation, budget int) (*Minimal, error) {
	if budget <= 0 {
		budget = 64
	}
	if c.epoch == nil || c.state == nil {
		return nil, fmt.Errorf("candidate %s carries no state to minimise", c.ID)
	}
	m := &minimizer{ctx: ctx, src: src, h: h, chk: chk, oracle: v.Oracle, class: v.Class(), budget: budget, last: v}
	e := c.epoch
	ds, err := m.ddmin(e, deviations(e, c.state))
	complete := err == nil
	if err != nil && err != errBudget {
		return nil, err
	}
	best, bestSt := e, stateOf(e, ds)
	if bestSt == nil {
		best, bestSt = e, c.state
		ds = deviations(e, c.state)
	}
	// The earliest crash point that shows it with the same deviations.
	if complete {
		for _, p := range h.Points(e.M) {
			if p.Index >= e.Point.Index {
				break
			}
			ee := h.Epoch(e.M, e.Policy, p)
			if stateOf(ee, ds) == nil {
				continue
			}
			ok, err := m.shows(ee, ds)
			if err == errBudget {
				break
			}
			if err != nil {
				return nil, err
			}
			if ok {
				best, bestSt = ee, stateOf(ee, ds)
				break
			}
		}
	}
	return &Minimal{StateID: best.ID(bestSt), From: c.ID, Deviations: ds, Explanation: explain(h, best, bestSt, ds),
		Checks: m.checks, Complete: complete, Violation: m.last, Reason: best.Point.Reason, CrashSeq: best.Point.T, LastMark: best.Point.LastMark}, nil
}

// DescribeOp names log entry i the way a storage engineer reads a trace: "op 57 (WRITE 4 KiB at
// sector 2048)".
func DescribeOp(h *model.History, i int) string {
	o := &h.Ops[i]
	var b strings.Builder
	fmt.Fprintf(&b, "op %d (", i)
	if o.Flags&pclog.FlagPreflush != 0 && o.Kind != pclog.KindFlush {
		b.WriteString("PREFLUSH ")
	}
	if o.Flags&pclog.FlagFUA != 0 {
		b.WriteString("FUA ")
	}
	b.WriteString(o.Kind.String())
	switch o.Kind {
	case pclog.KindMark:
		fmt.Fprintf(&b, " %q", o.Name)
	case pclog.KindFlush:
	default:
		ss := h.SectorSize[o.Dev]
		fmt.Fprintf(&b, " %s at sector %d", humanBytes(o.Len), o.Off/ss)
	}
	if len(h.DevSize) > 1 {
		fmt.Fprintf(&b, ", device %d", o.Dev)
	}
	b.WriteString(")")
	return b.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// explain turns a deviation set into one sentence.
func explain(h *model.History, e *model.Epoch, st *model.State, ds []Deviation) string {
	if len(ds) == 0 {
		return fmt.Sprintf("the violation shows even when every operation submitted before the crash point (%s) landed: the fault is in what was written, not in what was lost", e.Point.Reason)
	}
	var parts []string
	earliest := ^uint64(0)
	for _, d := range ds {
		switch d.Kind {
		case "dropped":
			parts = append(parts, DescribeOp(h, d.Op)+" did not land")
		case "cut":
			parts = append(parts, DescribeOp(h, d.Op)+" and every later possibly-persisted operation did not land")
		case "torn":
			parts = append(parts, fmt.Sprintf("%s landed torn (only sectors %s of %d)", DescribeOp(h, d.Op), d.Torn, e.Sectors(d.Op)))
		case "ignored":
			parts = append(parts, DescribeOp(h, d.Op)+" was ignored by the device (the old data stayed)")
		case "flipped":
			parts = append(parts, fmt.Sprintf("%s reached media after %s", DescribeOp(h, d.Op), DescribeOp(h, d.Other)))
		case "carried":
			parts = append(parts, fmt.Sprintf("%s carried the content of %s", DescribeOp(h, d.Op), DescribeOp(h, d.Other)))
		}
		if d.Kind == "dropped" || d.Kind == "cut" || d.Kind == "torn" {
			earliest = min(earliest, h.Ops[d.Op].Complete)
		}
	}
	s := strings.Join(parts, "; ")
	if earliest == ^uint64(0) {
		return s
	}
	// The first operation that landed although it completed after what was lost (a durable one
	// when there is one: the promise that was kept while an earlier write was not).
	dropped := map[int]bool{}
	for _, i := range st.Dropped {
		dropped[i] = true
	}
	first, firstDurable := -1, -1
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Kind == pclog.KindMark || o.Kind == pclog.KindFlush || o.Complete <= earliest || o.Complete >= e.Point.T || dropped[i] || st.Torn[i] != nil {
			continue
		}
		if first < 0 {
			first = i
		}
		if e.IsFixed(i) {
			firstDurable = i
			break
		}
	}
	if firstDurable >= 0 {
		first = firstDurable
	}
	if first >= 0 {
		s += " while " + DescribeOp(h, first) + " did"
	}
	return s
}
