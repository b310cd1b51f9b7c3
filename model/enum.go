package model

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Strategy names how the states of one crash point are enumerated.
type Strategy string

const (
	// Exhaustive enumerates every state (every subset, tear, discard choice and order).
	Exhaustive Strategy = "exhaustive"
	// DropK: everything landed except any k changes (k = 1..K): the "almost everything landed"
	// states that find most bugs.
	DropK Strategy = "drop-k"
	// KeepK: only up to k of the possibly-persisted ops landed.
	KeepK Strategy = "keep-k"
	// Sample draws seeded random states.
	Sample Strategy = "sample"
)

// Strategies lists every strategy name.
func Strategies() []string {
	return []string{string(Exhaustive), string(DropK), string(KeepK), string(Sample)}
}

// ParseStrategy parses a strategy name.
func ParseStrategy(s string) (Strategy, error) {
	for _, n := range Strategies() {
		if n == s {
			return Strategy(s), nil
		}
	}
	return "", fmt.Errorf("unknown strategy %q (want one of %s)", s, strings.Join(Strategies(), ", "))
}

// EnumOptions tunes enumeration at one crash point.
type EnumOptions struct {
	Strategy Strategy
	K        int    // drop-k / keep-k (default 2)
	Max      int    // at most this many states at this point (0: no limit; sample default 64)
	Seed     uint64 // sample
}

// dimension kinds
const (
	dimPending = iota // options: 0 landed whole, 1 dropped, 2.. torn variants
	dimDiscard        // 0 zeros, 1 ignored
	dimPair           // 0 completion order, 1 flipped
	dimCarry          // 0 own content, 1.. carries[op][opt-1]
)

type dim struct {
	kind  int
	op    int
	pair  [2]int
	n     int    // number of options
	tears []Mask // torn variants (options 2..)
}

func (e *Epoch) dims(exhaustive bool) []dim {
	var ds []dim
	for _, i := range e.Pending {
		d := dim{kind: dimPending, op: i, n: 2}
		if e.M == Torn {
			d.tears = e.tearVariants(i, exhaustive)
			d.n += len(d.tears)
		}
		ds = append(ds, d)
	}
	for _, i := range e.Discards {
		ds = append(ds, dim{kind: dimDiscard, op: i, n: 2})
	}
	for _, p := range e.Pairs {
		ds = append(ds, dim{kind: dimPair, pair: p, n: 2})
	}
	for _, i := range sortedKeys(e.Carries) {
		ds = append(ds, dim{kind: dimCarry, op: i, n: 1 + len(e.Carries[i])})
	}
	return ds
}

// tearVariants lists proper non-empty sector subsets of op i: all of them when exhaustive and the
// op is small; otherwise the ones a sequential device leaves (a prefix or a suffix of the
// sectors landed) at up to 16 split points.
func (e *Epoch) tearVariants(i int, exhaustive bool) []Mask {
	n := e.Sectors(i)
	if n < 2 {
		return nil
	}
	var out []Mask
	if exhaustive && n <= 12 {
		for v := 1; v < (1<<n)-1; v++ {
			m := NewMask(n)
			for s := 0; s < n; s++ {
				if v&(1<<s) != 0 {
					m.Set(s)
				}
			}
			out = append(out, m)
		}
		return out
	}
	splits := []int{}
	if n-1 <= 16 {
		for j := 1; j < n; j++ {
			splits = append(splits, j)
		}
	} else {
		for k := 1; k <= 16; k++ {
			splits = append(splits, k*n/17)
		}
	}
	for _, j := range splits {
		head, tail := NewMask(n), NewMask(n)
		for s := 0; s < j; s++ {
			head.Set(s)
		}
		for s := j; s < n; s++ {
			tail.Set(s)
		}
		out = append(out, head, tail)
	}
	return out
}

// build turns one option per dimension into a state.
func (e *Epoch) build(ds []dim, opt []int) *State {
	st := &State{Model: e.M, Policy: e.Policy, Point: e.Point.Index}
	for k, d := range ds {
		o := opt[k]
		if o == 0 {
			continue
		}
		switch d.kind {
		case dimPending:
			if o == 1 {
				st.Dropped = append(st.Dropped, d.op)
			} else {
				if st.Torn == nil {
					st.Torn = map[int]Mask{}
				}
				st.Torn[d.op] = d.tears[o-2]
			}
		case dimDiscard:
			st.KeepDiscards = append(st.KeepDiscards, d.op)
		case dimPair:
			st.Flips = append(st.Flips, d.pair)
		case dimCarry:
			if st.Carry == nil {
				st.Carry = map[int]int{}
			}
			st.Carry[d.op] = e.Carries[d.op][o-1]
		}
	}
	st.Normalize()
	return st
}

// valid reports whether the state's flips admit a real order.
func (e *Epoch) valid(st *State) bool {
	if len(st.Flips) == 0 {
		return true
	}
	_, err := e.Image(st)
	return err == nil
}

// States enumerates the states of this crash point, calling yield for each until it returns
// false. It reports whether the enumeration was cut short by opt.Max.
func (e *Epoch) States(opt EnumOptions, yield func(*State) bool) (truncated bool, err error) {
	if e.M == Coalesce {
		return e.coalesceStates(opt, yield)
	}
	exh := opt.Strategy == Exhaustive
	ds := e.dims(exh)
	count := 0
	emit := func(choice []int) (stop bool) {
		st := e.build(ds, choice)
		if !e.valid(st) {
			return false
		}
		if opt.Max > 0 && count >= opt.Max {
			truncated = true
			return true
		}
		count++
		return !yield(st)
	}
	choice := make([]int, len(ds))
	switch opt.Strategy {
	case Exhaustive:
		total := 1.0
		for _, d := range ds {
			total *= float64(d.n)
		}
		if total > 1<<24 {
			return false, fmt.Errorf("crash point %d: exhaustive enumeration would visit %.3g states (%d choices); use --strategy drop-k, keep-k or sample", e.Point.Index, total, len(ds))
		}
		for {
			if emit(choice) {
				return truncated, nil
			}
			k := 0
			for ; k < len(ds); k++ {
				choice[k]++
				if choice[k] < ds[k].n {
					break
				}
				choice[k] = 0
			}
			if k == len(ds) {
				return truncated, nil
			}
		}
	case DropK, KeepK:
		K := opt.K
		if K <= 0 {
			K = 2
		}
		if opt.Strategy == KeepK {
			for k, d := range ds {
				if d.kind == dimPending {
					choice[k] = 1
				}
			}
		}
		base := append([]int(nil), choice...)
		// changes: (dim, option) pairs differing from the base
		type change struct{ d, o int }
		var chs []change
		for k, d := range ds {
			for o := 0; o < d.n; o++ {
				if o == base[k] || (opt.Strategy == KeepK && d.kind != dimPending) {
					continue
				}
				chs = append(chs, change{k, o})
			}
		}
		if emit(choice) {
			return truncated, nil
		}
		// combinations of 1..K changes on distinct dimensions, in lexicographic order
		var rec func(start, left int) bool
		rec = func(start, left int) bool {
			for c := start; c < len(chs); c++ {
				ch := chs[c]
				if choice[ch.d] != base[ch.d] {
					continue
				}
				choice[ch.d] = ch.o
				if emit(choice) {
					return true
				}
				if left > 1 && rec(c+1, left-1) {
					return true
				}
				choice[ch.d] = base[ch.d]
			}
			return false
		}
		rec(0, K)
		return truncated, nil
	case Sample:
		n := opt.Max
		if n <= 0 {
			n = 64
		}
		rng := rand.New(rand.NewPCG(opt.Seed, uint64(e.Point.Index)*0x9e3779b97f4a7c15+1))
		if len(ds) == 0 {
			emit(choice)
			return false, nil
		}
		for tries := 0; count < n && tries < 4*n; tries++ {
			for k, d := range ds {
				choice[k] = rng.IntN(d.n)
			}
			if emit(choice) {
				return truncated, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("unknown strategy %q", opt.Strategy)
}

// coalesceStates: the device persists the pending operations in order and the crash stops it
// after any k of them; each landed write carries either its own content or the newest content
// issued for its range (the ZFS-like buffer). Exhaustive also tries every subset of carries.
func (e *Epoch) coalesceStates(opt EnumOptions, yield func(*State) bool) (bool, error) {
	count := 0
	pendingAt := map[int]int{}
	for k, i := range e.Pending {
		pendingAt[i] = k
	}
	emitOne := func(k int, carry map[int]int, keep []int) (stop bool, trunc bool) {
		if opt.Max > 0 && count >= opt.Max {
			return true, true
		}
		st := &State{Model: e.M, Policy: e.Policy, Point: e.Point.Index, Dropped: append([]int(nil), e.Pending[k:]...), Carry: carry, KeepDiscards: keep}
		st.Normalize()
		count++
		return !yield(st), false
	}
	// Discards that landed may have been ignored (policy either): every subset when exhaustive,
	// else each one alone.
	emit := func(k int, carry map[int]int) (bool, bool) {
		var ds []int
		for _, i := range e.Discards {
			if pk, ok := pendingAt[i]; !ok || pk < k {
				ds = append(ds, i)
			}
		}
		if stop, trunc := emitOne(k, carry, nil); stop {
			return stop, trunc
		}
		if opt.Strategy == Exhaustive && len(ds) <= 12 {
			for mask := 1; mask < 1<<len(ds); mask++ {
				var keep []int
				for b, i := range ds {
					if mask&(1<<b) != 0 {
						keep = append(keep, i)
					}
				}
				if stop, trunc := emitOne(k, carry, keep); stop {
					return stop, trunc
				}
			}
			return false, false
		}
		for _, i := range ds {
			if stop, trunc := emitOne(k, carry, []int{i}); stop {
				return stop, trunc
			}
		}
		return false, false
	}
	carriers := func(k int) []int {
		var c []int
		for _, i := range e.Pending[:k] {
			if len(e.Carries[i]) > 0 {
				c = append(c, i)
			}
		}
		return c
	}
	newest := func(i int) int { cs := e.Carries[i]; return cs[len(cs)-1] }
	if opt.Strategy == Sample {
		n := opt.Max
		if n <= 0 {
			n = 64
		}
		rng := rand.New(rand.NewPCG(opt.Seed, uint64(e.Point.Index)*0x9e3779b97f4a7c15+1))
		for c := 0; c < n; c++ {
			k := rng.IntN(len(e.Pending) + 1)
			carry := map[int]int{}
			for _, i := range carriers(k) {
				if rng.IntN(2) == 1 {
					carry[i] = newest(i)
				}
			}
			if stop, _ := emit(k, carry); stop {
				return false, nil
			}
		}
		return false, nil
	}
	for k := 0; k <= len(e.Pending); k++ {
		cs := carriers(k)
		if stop, trunc := emit(k, nil); stop {
			return trunc, nil
		}
		if len(cs) == 0 {
			continue
		}
		if opt.Strategy == Exhaustive && len(cs) <= 16 {
			for mask := 1; mask < 1<<len(cs); mask++ {
				carry := map[int]int{}
				for b, i := range cs {
					if mask&(1<<b) != 0 {
						carry[i] = newest(i)
					}
				}
				if stop, trunc := emit(k, carry); stop {
					return trunc, nil
				}
			}
			continue
		}
		carry := map[int]int{}
		for _, i := range cs {
			carry[i] = newest(i)
		}
		if stop, trunc := emit(k, carry); stop {
			return trunc, nil
		}
	}
	return false, nil
}
