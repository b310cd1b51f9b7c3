package verify

import (
	"fmt"
	"sync"
)

// FaultKind is a misbehaviour FaultTarget can inject.
type FaultKind int

const (
	// FaultLostWrite acknowledges a write without performing it: the block keeps (restores) its
	// previous, intact version.
	FaultLostWrite FaultKind = iota
	// FaultMisdirect performs the write at another offset (MisdirectTo) instead.
	FaultMisdirect
	// FaultTear writes only the first TearSector sectors of the block.
	FaultTear
	// FaultGarbage writes garbage instead of the data.
	FaultGarbage
	// FaultIgnoreZeroes acknowledges WRITE_ZEROES (and TRIM) without changing the block.
	FaultIgnoreZeroes
)

func (k FaultKind) String() string {
	return [...]string{"lost-write", "misdirect", "tear", "garbage", "ignore-zeroes"}[k]
}

// Fault is one injected misbehaviour: it fires once, on the (After+1)-th matching operation on
// the block at Offset.
type Fault struct {
	Kind        FaultKind
	Offset      int64
	After       int
	MisdirectTo int64
	TearSector  int

	seen  int
	fired bool
}

// FaultTarget wraps a Target and misbehaves as its faults say; it exists so tests can show that
// every class of failure is detected and classified.
type FaultTarget struct {
	Target
	mu     sync.Mutex
	faults []*Fault
}

// NewFaultTarget wraps t.
func NewFaultTarget(t Target, faults ...Fault) *FaultTarget {
	ft := &FaultTarget{Target: t}
	for i := range faults {
		f := faults[i]
		ft.faults = append(ft.faults, &f)
	}
	return ft
}

// Fired reports how many faults fired.
func (ft *FaultTarget) Fired() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	n := 0
	for _, f := range ft.faults {
		if f.fired {
			n++
		}
	}
	return n
}

// match returns the fault that fires for an operation of class write (true) or zeroes (false).
func (ft *FaultTarget) match(off int64, write bool) *Fault {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for _, f := range ft.faults {
		if f.fired || f.Offset != off || (f.Kind == FaultIgnoreZeroes) == write {
			continue
		}
		if f.seen < f.After {
			f.seen++
			continue
		}
		f.fired = true
		return f
	}
	return nil
}

// WriteAt implements Target.
func (ft *FaultTarget) WriteAt(p []byte, off int64) (int, error) {
	f := ft.match(off, true)
	if f == nil {
		return ft.Target.WriteAt(p, off)
	}
	switch f.Kind {
	case FaultLostWrite:
		return len(p), nil
	case FaultMisdirect:
		if _, err := ft.Target.WriteAt(p, f.MisdirectTo); err != nil {
			return 0, err
		}
		return len(p), nil
	case FaultTear:
		n := f.TearSector * SectorSize
		if n <= 0 || n >= len(p) {
			return 0, fmt.Errorf("fault: tear at sector %d of a %d-byte block", f.TearSector, len(p))
		}
		if _, err := ft.Target.WriteAt(p[:n], off); err != nil {
			return 0, err
		}
		return len(p), nil
	case FaultGarbage:
		g := make([]byte, len(p))
		s := rng(uint64(off) | 1)
		for i := range g {
			g[i] = byte(s.next())
		}
		if _, err := ft.Target.WriteAt(g, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return ft.Target.WriteAt(p, off)
}

// WriteZeroes implements Target.
func (ft *FaultTarget) WriteZeroes(off, n int64) error {
	if ft.match(off, false) != nil {
		return nil
	}
	return ft.Target.WriteZeroes(off, n)
}

// Trim implements Target.
func (ft *FaultTarget) Trim(off, n int64) error {
	if ft.match(off, false) != nil {
		return nil
	}
	return ft.Target.Trim(off, n)
}
