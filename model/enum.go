package model

import (
	"fmt"
	"maps"
	"math/bits"
	"math/rand/v2"
	"slices"
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
	return "", fmt.Errorf("%w %q (want one of %s)", ErrUnknownStrategy, s, strings.Join(Strategies(), ", "))
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
	for _, i := range slices.Sorted(maps.Keys(e.Carries)) {
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

// ExhaustiveLimit is the number of states per crash point beyond which Exhaustive does not walk
// the whole space: it caps the point, enumerating the states with the fewest changes first
// (spread over every choice, as drop-k does with Max), and reports the point as truncated.
const ExhaustiveLimit = 1 << 16

// change is one choice differing from a strategy's base state: dimension d takes option o.
type change struct{ d, o int }

// enumerator emits the states of one crash point, counting them against opt.Max.
type enumerator struct {
	e         *Epoch
	ds        []dim
	max       int // 0: no limit
	count     int
	truncated bool
	stopped   bool
	yield     func(*State) bool
}

// emit builds and yields the state of choice; it returns false when the enumeration must stop
// (the limit is reached or yield asked to stop).
func (en *enumerator) emit(choice []int) bool {
	if en.stopped {
		return false
	}
	st := en.e.build(en.ds, choice)
	if !en.e.valid(st) {
		return true
	}
	if en.max > 0 && en.count >= en.max {
		en.truncated, en.stopped = true, true
		return false
	}
	en.count++
	if !en.yield(st) {
		en.stopped = true
		return false
	}
	return true
}

// left is how many more states the limit allows (-1: no limit).
func (en *enumerator) left() int {
	if en.max <= 0 {
		return -1
	}
	return en.max - en.count
}

// States enumerates the states of this crash point, calling yield for each until it returns
// false. It reports whether the enumeration was cut short: by opt.Max, or by ExhaustiveLimit for
// an exhaustive space larger than that.
//
// Strategies: Exhaustive walks every combination of choices. DropK starts from "everything
// landed, whole, in completion order" and makes up to K changes (drop an op, tear it, keep a
// discarded range, flip a concurrent pair, carry newer content). KeepK starts from "nothing
// possibly-persisted landed", lands up to K of those ops, and on top makes up to K changes among
// the ops that landed (tear, keep a discarded range, flip a pair both of whose ops landed). With
// a Max smaller than a level's size, the states of that level are spread evenly over all its
// combinations (every op has its turn), fewer changes first. Sample draws seeded random states.
func (e *Epoch) States(opt EnumOptions, yield func(*State) bool) (truncated bool, err error) {
	if _, err := ParseStrategy(string(opt.Strategy)); err != nil {
		return false, err
	}
	if e.M == Coalesce {
		return e.coalesceStates(opt, yield)
	}
	exh := opt.Strategy == Exhaustive
	ds := e.dims(exh)
	en := &enumerator{e: e, ds: ds, max: opt.Max, yield: yield}
	choice := make([]int, len(ds))
	K := opt.K
	if K <= 0 {
		K = 2
	}
	switch opt.Strategy {
	case Exhaustive:
		total := 1.0
		for _, d := range ds {
			total *= float64(d.n)
		}
		if total > ExhaustiveLimit || (opt.Max > 0 && total > float64(opt.Max)) {
			if en.max <= 0 || en.max > ExhaustiveLimit {
				en.max = ExhaustiveLimit
			}
			en.changes(choice, e.allChanges(ds, choice), len(ds), opt.Seed)
			return en.truncated || total > float64(en.count), nil
		}
		for {
			if !en.emit(choice) {
				return en.truncated, nil
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
				return en.truncated, nil
			}
		}
	case DropK:
		en.changes(choice, e.allChanges(ds, choice), K, opt.Seed)
		return en.truncated, nil
	case KeepK:
		e.keepK(en, choice, K, opt.Seed)
		return en.truncated, nil
	case Sample:
		n := opt.Max
		if n <= 0 {
			n = 64
		}
		rng := rand.New(rand.NewPCG(opt.Seed, uint64(e.Point.Index)*0x9e3779b97f4a7c15+1))
		if len(ds) == 0 {
			en.emit(choice)
			return false, nil
		}
		for tries := 0; en.count < n && tries < 4*n; tries++ {
			for k, d := range ds {
				choice[k] = rng.IntN(d.n)
			}
			if !en.emit(choice) {
				return false, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("%w %q", ErrUnknownStrategy, opt.Strategy)
}

// allChanges lists every (dimension, option) differing from base.
func (e *Epoch) allChanges(ds []dim, base []int) []change {
	var chs []change
	for k, d := range ds {
		for o := 0; o < d.n; o++ {
			if o != base[k] {
				chs = append(chs, change{k, o})
			}
		}
	}
	return chs
}

// keepK: nothing possibly-persisted landed, then up to K of them landed, each landed set
// combined with up to K further changes among the ops that landed.
func (e *Epoch) keepK(en *enumerator, choice []int, K int, seed uint64) {
	ds := en.ds
	var lands []change
	for k, d := range ds {
		if d.kind == dimPending {
			choice[k] = 1
			lands = append(lands, change{k, 0})
		}
	}
	base := append([]int(nil), choice...)
	landedAll := func(cur []int, ops ...int) bool {
		for _, i := range ops {
			if e.pending[i] && !e.landedIn(ds, cur, i) {
				return false
			}
		}
		return true
	}
	// The other changes a landed set allows: tears of landed ops, discard choices of landed
	// discards, flips of pairs whose two ops landed, carries of landed writes.
	others := func(cur []int) []change {
		var chs []change
		for k, d := range ds {
			switch d.kind {
			case dimPending:
				if cur[k] == 0 {
					for o := 2; o < d.n; o++ {
						chs = append(chs, change{k, o})
					}
				}
			case dimDiscard, dimCarry:
				if landedAll(cur, d.op) {
					for o := 1; o < d.n; o++ {
						chs = append(chs, change{k, o})
					}
				}
			case dimPair:
				if landedAll(cur, d.pair[0], d.pair[1]) {
					chs = append(chs, change{k, 1})
				}
			}
		}
		return chs
	}
	// First every landed set alone (spread over the ops when Max is small), then each landed
	// set with its further changes.
	var sets [][]int
	en.levels(choice, base, lands, K, seed, func(cur []int) {
		sets = append(sets, append([]int(nil), cur...))
	}, true)
	if en.stopped {
		return
	}
	for _, cur := range sets {
		copy(choice, cur)
		sub := &enumerator{e: e, ds: ds, max: en.left(), yield: en.yield}
		if sub.max == 0 {
			en.truncated = true
			return
		}
		sub.levels(choice, cur, others(cur), K, seed, nil, false)
		en.count += sub.count
		if sub.stopped {
			en.truncated = en.truncated || sub.truncated
			en.stopped = true
			return
		}
	}
}

// landedIn reports whether op i landed in the choice vector (fixed ops always land).
func (e *Epoch) landedIn(ds []dim, cur []int, i int) bool {
	for k, d := range ds {
		if d.kind == dimPending && d.op == i {
			return cur[k] != 1
		}
	}
	return true
}

// changes emits base, then every combination of 1..K changes on distinct dimensions (fewer
// changes first); a level larger than the remaining limit is spread evenly over its
// combinations.
func (en *enumerator) changes(choice []int, chs []change, K int, seed uint64) {
	en.levels(choice, append([]int(nil), choice...), chs, K, seed, nil, true)
}

// levels emits (when withBase) the base choice, then the combinations of 1..K changes, level by
// level; each emitted choice is also passed to also (if set).
func (en *enumerator) levels(choice, base []int, chs []change, K int, seed uint64, also func([]int), withBase bool) {
	if withBase {
		copy(choice, base)
		if !en.emit(choice) {
			return
		}
		if also != nil {
			also(choice)
		}
	}
	for L := 1; L <= K && L <= len(chs); L++ {
		left := en.left()
		if left == 0 {
			en.truncated, en.stopped = true, true
			return
		}
		total, ok := binom(len(chs), L)
		visit := func(c []int) bool {
			copy(choice, base)
			for _, x := range c {
				ch := chs[x]
				if choice[ch.d] != base[ch.d] {
					return true // two changes of one dimension: not a combination
				}
				choice[ch.d] = ch.o
			}
			if !en.emit(choice) {
				return false
			}
			if also != nil {
				also(choice)
			}
			return true
		}
		if left < 0 || (ok && total <= uint64(left)) {
			if !lexCombos(len(chs), L, visit) {
				return
			}
			continue
		}
		// Spread: left combinations at evenly spaced ranks (or seeded picks when the count
		// does not fit in 64 bits); the level is not complete, so the point is truncated.
		en.truncated = true
		rng := rand.New(rand.NewPCG(seed, uint64(L)))
		for j := 0; j < left && !en.stopped; j++ {
			var c []int
			if ok {
				hi, lo := bits.Mul64(uint64(j), total)
				r, _ := bits.Div64(hi, lo, uint64(left))
				c = unrank(len(chs), L, r)
			} else {
				c = randomCombo(rng, len(chs), L)
			}
			if !visit(c) {
				return
			}
		}
		en.stopped = true
		return
	}
}

// binom is C(n, k), and false when it does not fit in 63 bits.
func binom(n, k int) (uint64, bool) {
	if k < 0 || k > n {
		return 0, true
	}
	k = min(k, n-k)
	r := uint64(1)
	for i := 1; i <= k; i++ {
		hi, lo := bits.Mul64(r, uint64(n-k+i))
		if hi != 0 || lo > 1<<62 {
			return 0, false
		}
		r = lo / uint64(i)
	}
	return r, true
}

// lexCombos calls f with every k-subset of 0..n-1 in lexicographic order until f returns false.
func lexCombos(n, k int, f func([]int) bool) bool {
	c := make([]int, k)
	for i := range c {
		c[i] = i
	}
	for {
		if !f(c) {
			return false
		}
		i := k - 1
		for i >= 0 && c[i] == n-k+i {
			i--
		}
		if i < 0 {
			return true
		}
		c[i]++
		for j := i + 1; j < k; j++ {
			c[j] = c[j-1] + 1
		}
	}
}

// unrank returns the k-subset of 0..n-1 of lexicographic rank r.
func unrank(n, k int, r uint64) []int {
	c := make([]int, 0, k)
	x := 0
	for i := 0; i < k; i++ {
		for v := x; v < n; v++ {
			cnt, _ := binom(n-v-1, k-i-1)
			if r < cnt {
				c = append(c, v)
				x = v + 1
				break
			}
			r -= cnt
		}
	}
	return c
}

// randomCombo draws a k-subset of 0..n-1.
func randomCombo(rng *rand.Rand, n, k int) []int {
	seen := map[int]bool{}
	for len(seen) < k {
		seen[rng.IntN(n)] = true
	}
	c := make([]int, 0, k)
	for v := range seen {
		c = append(c, v)
	}
	slices.Sort(c)
	return c
}

// coalesceStates: the device persists the pending operations in order and the crash stops it
// after any k of them; each landed write carries either its own content or the newest content
// issued for its range (the ZFS-like buffer). Exhaustive also tries every subset of carries.
func (e *Epoch) coalesceStates(opt EnumOptions, yield func(*State) bool) (bool, error) {
	c := &coalesceEnum{e: e, opt: opt, yield: yield, pendingAt: map[int]int{}}
	for k, i := range e.Pending {
		c.pendingAt[i] = k
	}
	if opt.Strategy == Sample {
		c.sample()
		return false, nil
	}
	for k := 0; k <= len(e.Pending); k++ {
		if c.cut(k) {
			break
		}
	}
	return c.truncated, nil
}

// coalesceEnum enumerates the states of one coalesce crash point.
type coalesceEnum struct {
	e         *Epoch
	opt       EnumOptions
	yield     func(*State) bool
	pendingAt map[int]int
	count     int
	truncated bool
	stopped   bool
}

// one emits the state where the first k pending ops landed, with carries and ignored discards.
func (c *coalesceEnum) one(k int, carry map[int]int, keep []int) bool {
	if c.stopped {
		return false
	}
	if c.opt.Max > 0 && c.count >= c.opt.Max {
		c.truncated, c.stopped = true, true
		return false
	}
	e := c.e
	st := &State{Model: e.M, Policy: e.Policy, Point: e.Point.Index, Dropped: append([]int(nil), e.Pending[k:]...), Carry: carry, KeepDiscards: keep}
	st.Normalize()
	c.count++
	if !c.yield(st) {
		c.stopped = true
	}
	return !c.stopped
}

// withDiscards emits the state of (k, carry) and its variants where landed discards were
// ignored (policy either): every subset when exhaustive (up to 12 discards, else each alone and
// the point counts as truncated), each one alone otherwise.
func (c *coalesceEnum) withDiscards(k int, carry map[int]int) bool {
	var ds []int
	for _, i := range c.e.Discards {
		if pk, ok := c.pendingAt[i]; !ok || pk < k {
			ds = append(ds, i)
		}
	}
	if !c.one(k, carry, nil) {
		return false
	}
	if c.opt.Strategy == Exhaustive && len(ds) <= 12 {
		for mask := 1; mask < 1<<len(ds); mask++ {
			if !c.one(k, carry, pick(ds, mask)) {
				return false
			}
		}
		return true
	}
	if c.opt.Strategy == Exhaustive && len(ds) > 1 {
		c.truncated = true
	}
	for _, i := range ds {
		if !c.one(k, carry, []int{i}) {
			return false
		}
	}
	return true
}

// carriers are the landed writes (of the first k pending) that may carry newer content.
func (c *coalesceEnum) carriers(k int) []int {
	var out []int
	for _, i := range c.e.Pending[:k] {
		if len(c.e.Carries[i]) > 0 {
			out = append(out, i)
		}
	}
	return out
}

func (c *coalesceEnum) newest(i int) int { cs := c.e.Carries[i]; return cs[len(cs)-1] }

// cut emits the states where the device stopped after k pending ops: no carry, then every
// subset of carries when exhaustive (up to 16 carriers, else all of them and the point counts as
// truncated), all carries otherwise. It reports whether the enumeration must stop.
func (c *coalesceEnum) cut(k int) bool {
	cs := c.carriers(k)
	if !c.withDiscards(k, nil) {
		return true
	}
	if len(cs) == 0 {
		return false
	}
	if c.opt.Strategy == Exhaustive && len(cs) <= 16 {
		for mask := 1; mask < 1<<len(cs); mask++ {
			carry := map[int]int{}
			for _, i := range pick(cs, mask) {
				carry[i] = c.newest(i)
			}
			if !c.withDiscards(k, carry) {
				return true
			}
		}
		return false
	}
	if c.opt.Strategy == Exhaustive {
		c.truncated = true
	}
	carry := map[int]int{}
	for _, i := range cs {
		carry[i] = c.newest(i)
	}
	return !c.withDiscards(k, carry)
}

// sample draws seeded random cuts and carries.
func (c *coalesceEnum) sample() {
	n := c.opt.Max
	if n <= 0 {
		n = 64
	}
	e := c.e
	rng := rand.New(rand.NewPCG(c.opt.Seed, uint64(e.Point.Index)*0x9e3779b97f4a7c15+1))
	for d := 0; d < n; d++ {
		k := rng.IntN(len(e.Pending) + 1)
		carry := map[int]int{}
		for _, i := range c.carriers(k) {
			if rng.IntN(2) == 1 {
				carry[i] = c.newest(i)
			}
		}
		if !c.withDiscards(k, carry) {
			return
		}
	}
}

// pick returns the elements of xs selected by the bits of mask.
func pick(xs []int, mask int) []int {
	var out []int
	for b, x := range xs {
		if mask&(1<<b) != 0 {
			out = append(out, x)
		}
	}
	return out
}
