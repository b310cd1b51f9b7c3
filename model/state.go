package model

import (
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Mask is a set of sector indices within one operation (bit i = sector i landed).
type Mask []uint64

// NewMask returns an empty mask for n sectors.
func NewMask(n int) Mask { return make(Mask, (n+63)/64) }

// Has reports whether sector i is in the set.
func (m Mask) Has(i int) bool { return i/64 < len(m) && m[i/64]&(1<<(i%64)) != 0 }

// Set adds sector i (the mask must be large enough).
func (m Mask) Set(i int) { m[i/64] |= 1 << (i % 64) }

// Count is the number of sectors in the set.
func (m Mask) Count() int {
	c := 0
	for _, w := range m {
		c += bits.OnesCount64(w)
	}
	return c
}

// Len is one past the highest sector in the set.
func (m Mask) Len() int {
	for k := len(m) - 1; k >= 0; k-- {
		if m[k] != 0 {
			return k*64 + 64 - bits.LeadingZeros64(m[k])
		}
	}
	return 0
}

// String prints sector ranges, e.g. "0-3.8".
func (m Mask) String() string {
	var parts []string
	n := m.Len()
	for s := 0; s < n; {
		if !m.Has(s) {
			s++
			continue
		}
		e := s
		for e+1 < n && m.Has(e+1) {
			e++
		}
		if e == s {
			parts = append(parts, strconv.Itoa(s))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", s, e))
		}
		s = e + 1
	}
	return strings.Join(parts, ".")
}

func parseMask(s string) (Mask, error) {
	var m Mask
	for _, p := range strings.Split(s, ".") {
		a, b, rng := strings.Cut(p, "-")
		lo, err := strconv.Atoi(a)
		if err != nil || lo < 0 {
			return nil, fmt.Errorf("bad sector %q", p)
		}
		hi := lo
		if rng {
			if hi, err = strconv.Atoi(b); err != nil || hi < lo {
				return nil, fmt.Errorf("bad sector range %q", p)
			}
		}
		if hi >= 1<<20 {
			return nil, fmt.Errorf("sector %d out of range", hi)
		}
		for len(m)*64 <= hi {
			m = append(m, 0)
		}
		for i := lo; i <= hi; i++ {
			m.Set(i)
		}
	}
	return m, nil
}

// State is one crash state: a crash point of a model plus the choices made there. The zero
// choice is "every possibly-persisted operation landed, whole, in completion order, discards read
// as zeros, no carries".
type State struct {
	Model  Model
	Policy DiscardPolicy
	Point  int
	// Dropped are possibly-persisted ops that did not land (sorted).
	Dropped []int
	// Torn maps a landed possibly-persisted op to the sectors of it that landed (model torn).
	Torn map[int]Mask
	// KeepDiscards are discards the device ignored (policy either), sorted.
	KeepDiscards []int
	// Flips are concurrent overlapping pairs applied against completion order, sorted.
	Flips [][2]int
	// Carry maps a write to the later write whose content it carries (model coalesce).
	Carry map[int]int

	kept []int // set by ParseState for the "k" form until resolved against an epoch
	hasK bool
}

// Normalize sorts the state's lists so that equal states print equally.
func (s *State) Normalize() {
	sort.Ints(s.Dropped)
	s.Dropped = slices.Compact(s.Dropped)
	sort.Ints(s.KeepDiscards)
	s.KeepDiscards = slices.Compact(s.KeepDiscards)
	sort.Slice(s.Flips, func(i, j int) bool {
		if s.Flips[i][0] != s.Flips[j][0] {
			return s.Flips[i][0] < s.Flips[j][0]
		}
		return s.Flips[i][1] < s.Flips[j][1]
	})
	s.Flips = slices.Compact(s.Flips)
	if len(s.Torn) == 0 {
		s.Torn = nil
	}
	if len(s.Carry) == 0 {
		s.Carry = nil
	}
}

// String prints the state ID with dropped ops listed explicitly ("d" form).
func (s *State) String() string { return s.format(nil) }

// ID prints the canonical state ID: like String, but when fewer ops landed than were dropped it
// lists the landed ones ("k" form). Both forms parse back to the same state.
func (e *Epoch) ID(s *State) string { return s.format(e) }

func (s *State) format(e *Epoch) string {
	var b strings.Builder
	b.WriteString(s.Model.String())
	if s.Policy != DiscardEither {
		b.WriteString("/" + s.Policy.String())
	}
	fmt.Fprintf(&b, ":%d", s.Point)
	if s.hasK { // parsed "k" form not yet resolved against its epoch: print it as given
		if len(s.kept) == 0 {
			b.WriteString(":k-")
		} else {
			b.WriteString(":k" + joinInts(s.kept))
		}
	} else if len(s.Dropped) > 0 {
		if e != nil && len(e.Pending)-len(s.Dropped) < len(s.Dropped) {
			drop := map[int]bool{}
			for _, i := range s.Dropped {
				drop[i] = true
			}
			var kept []int
			for _, i := range e.Pending {
				if !drop[i] {
					kept = append(kept, i)
				}
			}
			if len(kept) == 0 {
				b.WriteString(":k-") // nothing landed
			} else {
				b.WriteString(":k" + joinInts(kept))
			}
		} else {
			b.WriteString(":d" + joinInts(s.Dropped))
		}
	}
	if len(s.Torn) > 0 {
		var parts []string
		for _, i := range slices.Sorted(maps.Keys(s.Torn)) {
			parts = append(parts, fmt.Sprintf("%d=%s", i, s.Torn[i]))
		}
		b.WriteString(":t" + strings.Join(parts, ","))
	}
	if len(s.KeepDiscards) > 0 {
		b.WriteString(":n" + joinInts(s.KeepDiscards))
	}
	if len(s.Flips) > 0 {
		var parts []string
		for _, p := range s.Flips {
			parts = append(parts, fmt.Sprintf("%d.%d", p[0], p[1]))
		}
		b.WriteString(":o" + strings.Join(parts, ","))
	}
	if len(s.Carry) > 0 {
		var parts []string
		for _, i := range slices.Sorted(maps.Keys(s.Carry)) {
			parts = append(parts, fmt.Sprintf("%d=%d", i, s.Carry[i]))
		}
		b.WriteString(":c" + strings.Join(parts, ","))
	}
	return b.String()
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ".")
}

func parseInts(s string) ([]int, error) {
	if s == "" {
		return nil, fmt.Errorf("empty op list")
	}
	var out []int
	seen := map[int]bool{}
	for _, p := range strings.Split(s, ".") {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad op index %q", p)
		}
		if seen[v] {
			return nil, fmt.Errorf("op %d listed twice", v)
		}
		seen[v] = true
		out = append(out, v)
	}
	return out, nil
}

// ParseState parses a state ID printed by String or Epoch.ID. A "k" (kept) form is resolved
// against the crash point's epoch by History.Resolve.
func ParseState(id string) (*State, error) {
	fields := strings.Split(strings.TrimSpace(id), ":")
	if len(fields) < 2 {
		return nil, fmt.Errorf("%w %q: want MODEL:POINT[:choices]", ErrBadStateID, id)
	}
	st := &State{}
	mname, pol, hasPol := strings.Cut(fields[0], "/")
	m, err := ParseModel(mname)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadStateID, id, err)
	}
	st.Model = m
	if hasPol {
		if st.Policy, err = ParseDiscardPolicy(pol); err != nil || pol == "either" || pol == "" {
			return nil, fmt.Errorf("%w %q: bad discard policy %q", ErrBadStateID, id, pol)
		}
	}
	if st.Point, err = strconv.Atoi(fields[1]); err != nil || st.Point < 0 {
		return nil, fmt.Errorf("%w %q: bad crash point %q", ErrBadStateID, id, fields[1])
	}
	seen := map[byte]bool{}
	for _, f := range fields[2:] {
		if f == "" {
			return nil, fmt.Errorf("%w %q: empty field", ErrBadStateID, id)
		}
		c, rest := f[0], f[1:]
		if seen[c] || (c == 'd' && seen['k']) || (c == 'k' && seen['d']) {
			return nil, fmt.Errorf("%w %q: field %q repeated", ErrBadStateID, id, string(c))
		}
		seen[c] = true
		if err := st.parseField(c, rest); err != nil {
			return nil, fmt.Errorf("%w %q: field %q: %w", ErrBadStateID, id, f, err)
		}
	}
	st.Normalize()
	return st, nil
}

func (st *State) parseField(c byte, rest string) error {
	var err error
	switch c {
	case 'd':
		st.Dropped, err = parseInts(rest)
	case 'k':
		st.hasK = true
		if rest != "-" {
			st.kept, err = parseInts(rest)
		}
	case 'n':
		st.KeepDiscards, err = parseInts(rest)
	case 't':
		st.Torn = map[int]Mask{}
		for _, p := range strings.Split(rest, ",") {
			a, b, ok := strings.Cut(p, "=")
			if !ok {
				return fmt.Errorf("want OP=SECTORS")
			}
			i, err := strconv.Atoi(a)
			if err != nil || i < 0 {
				return fmt.Errorf("bad op index %q", a)
			}
			m, err := parseMask(b)
			if err != nil {
				return err
			}
			if _, dup := st.Torn[i]; dup {
				return fmt.Errorf("op %d torn twice", i)
			}
			st.Torn[i] = m
		}
	case 'o':
		for _, p := range strings.Split(rest, ",") {
			v, err := parseInts(p)
			if err != nil || len(v) != 2 || v[0] >= v[1] {
				return fmt.Errorf("bad flip %q (want A.B with A < B)", p)
			}
			st.Flips = append(st.Flips, [2]int{v[0], v[1]})
		}
	case 'c':
		st.Carry = map[int]int{}
		for _, p := range strings.Split(rest, ",") {
			a, b, ok := strings.Cut(p, "=")
			i, err1 := strconv.Atoi(a)
			j, err2 := strconv.Atoi(b)
			if !ok || err1 != nil || err2 != nil || i < 0 || j < 0 {
				return fmt.Errorf("bad carry %q (want OP=OP)", p)
			}
			st.Carry[i] = j
		}
	default:
		return fmt.Errorf("unknown field kind %q", string(c))
	}
	return err
}

// Resolve parses id and checks it against the history: it returns the epoch of its crash point
// and the state, or an error naming what does not fit.
func (h *History) Resolve(id string) (*Epoch, *State, error) {
	st, err := ParseState(id)
	if err != nil {
		return nil, nil, err
	}
	pts := h.Points(st.Model)
	if st.Point >= len(pts) {
		return nil, nil, fmt.Errorf("%w: state ID %q: crash point %d does not exist (model %s has %d crash points in this log)", ErrStateNotAllowed, id, st.Point, st.Model, len(pts))
	}
	e := h.Epoch(st.Model, st.Policy, pts[st.Point])
	if st.hasK {
		keep := map[int]bool{}
		for _, i := range st.kept {
			if !e.pending[i] {
				return nil, nil, fmt.Errorf("%w: state ID %q: op %d is not possibly-persisted at crash point %d", ErrStateNotAllowed, id, i, st.Point)
			}
			keep[i] = true
		}
		st.Dropped = nil
		for _, i := range e.Pending {
			if !keep[i] {
				st.Dropped = append(st.Dropped, i)
			}
		}
		st.kept, st.hasK = nil, false
	}
	if err := e.Check(st); err != nil {
		return nil, nil, fmt.Errorf("state ID %q: %w", id, err)
	}
	return e, st, nil
}
