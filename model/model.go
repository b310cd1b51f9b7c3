package model

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/powercut/powercut/pclog"
)

// Model selects which crash states are generated.
type Model uint8

const (
	Prefix Model = iota + 1
	Flush
	Reorder
	Torn
	Coalesce
)

var modelNames = []string{Prefix: "prefix", Flush: "flush", Reorder: "reorder", Torn: "torn", Coalesce: "coalesce"}

func (m Model) String() string {
	if int(m) < len(modelNames) && m > 0 {
		return modelNames[m]
	}
	return fmt.Sprintf("model(%d)", uint8(m))
}

// Models lists every model name.
func Models() []string { return modelNames[1:] }

// ParseModel parses a model name.
func ParseModel(s string) (Model, error) {
	for i, n := range modelNames {
		if i > 0 && n == s {
			return Model(i), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want one of %s)", ErrUnknownModel, s, strings.Join(Models(), ", "))
}

// prefixLike models land exactly the operations completed before the crash point.
func (m Model) prefixLike() bool { return m == Prefix || m == Flush }

// completionOrdered models apply landed operations in completion order (no reordering).
func (m Model) completionOrdered() bool { return m == Prefix || m == Flush || m == Coalesce }

// DiscardPolicy says what a DISCARD leaves behind.
type DiscardPolicy uint8

const (
	DiscardEither DiscardPolicy = iota
	DiscardZero
	DiscardKeep
)

func (p DiscardPolicy) String() string {
	return [...]string{"either", "zero", "keep"}[p]
}

// ParseDiscardPolicy parses zero|keep|either.
func ParseDiscardPolicy(s string) (DiscardPolicy, error) {
	switch s {
	case "either", "":
		return DiscardEither, nil
	case "zero":
		return DiscardZero, nil
	case "keep":
		return DiscardKeep, nil
	}
	return 0, fmt.Errorf("%w %q (want zero, keep or either)", ErrUnknownDiscardPolicy, s)
}

// Op is one operation of a history.
type Op struct {
	Kind     pclog.Kind
	Flags    pclog.Flags
	Dev      uint16
	Off, Len int64 // bytes
	Submit   uint64
	Complete uint64
	Name     string // MARK
}

// isData: the op changes content.
func (o *Op) isData() bool {
	return o.Kind == pclog.KindWrite || o.Kind == pclog.KindWriteZeroes || o.Kind == pclog.KindDiscard
}

// isFlush: the op acts as a flush (FLUSH, or PREFLUSH on a data op).
func (o *Op) isFlush() bool {
	return o.Kind == pclog.KindFlush || (o.Flags&pclog.FlagPreflush != 0 && o.Kind != pclog.KindMark)
}

func (o *Op) fua() bool { return o.Flags&pclog.FlagFUA != 0 && o.isData() }

func (o *Op) overlaps(p *Op) bool {
	return o.Dev == p.Dev && o.Off < p.Off+p.Len && p.Off < o.Off+o.Len
}

// before: o completed before p was submitted (o must precede p).
func (o *Op) before(p *Op) bool { return o.Complete < p.Submit }

func (o *Op) concurrent(p *Op) bool { return !o.before(p) && !p.before(o) }

// History is a recording's operations in completion order (log order).
type History struct {
	Ops        []Op
	SectorSize map[uint16]int64
	DevSize    map[uint16]int64
	// BaseZero, when set, reports whether the base image of device dev reads as zeros over
	// [off, off+n). It lets a discard whose kept content would be zeros settle (its choice cannot
	// change the image). Nil: the base is unknown and never assumed zero.
	BaseZero func(dev uint16, off, n int64) bool
	end      uint64 // one past the last sequence number
	marks    []int  // op indices of the marks, in order
}

// NewHistory builds a history. Ops must be in completion order.
func NewHistory(ops []Op, devs []pclog.Device) (*History, error) {
	h := &History{Ops: ops, SectorSize: map[uint16]int64{}, DevSize: map[uint16]int64{}}
	for _, d := range devs {
		h.SectorSize[d.ID] = int64(d.SectorSize)
		h.DevSize[d.ID] = d.Size
	}
	for i := range ops {
		o := &ops[i]
		if i > 0 && o.Complete <= ops[i-1].Complete {
			return nil, fmt.Errorf("op %d: completion %d not after op %d's %d", i, o.Complete, i-1, ops[i-1].Complete)
		}
		if o.Submit > o.Complete {
			return nil, fmt.Errorf("op %d: submit %d after complete %d", i, o.Submit, o.Complete)
		}
		if _, ok := h.SectorSize[o.Dev]; !ok {
			return nil, fmt.Errorf("op %d: unknown device %d", i, o.Dev)
		}
		if o.Complete+1 > h.end {
			h.end = o.Complete + 1
		}
		if o.Kind == pclog.KindMark {
			h.marks = append(h.marks, i)
		}
	}
	return h, nil
}

// ErrSectorSize: a sector size other than 512 or 4096, or one the recorded operations are not
// aligned to. SetSectorSize's errors are *SectorSizeError values that match it.
var ErrSectorSize = errors.New("bad sector size")

// SectorSizeError says why a sector size was refused: Size is not 512 or 4096 (Op is -1), or
// operation Op of the history (the first one) is not aligned to it, so the log was not recorded
// on a device with that sector size.
type SectorSizeError struct {
	Size int64
	Op   int // index in History.Ops; -1 when Size itself is not a sector size
	Dev  uint16
	Kind pclog.Kind
	Off  int64 // bytes
	Len  int64 // bytes
}

func (e *SectorSizeError) Error() string {
	if e.Op < 0 {
		return fmt.Sprintf("%v %d: want 512 or 4096", ErrSectorSize, e.Size)
	}
	return fmt.Sprintf("%v %d: op %d (%s of %d bytes at byte %d of device %d) is not aligned to it", ErrSectorSize, e.Size, e.Op, e.Kind, e.Len, e.Off, e.Dev)
}

// Is makes every SectorSizeError match ErrSectorSize.
func (e *SectorSizeError) Is(target error) bool { return target == ErrSectorSize }

// SetSectorSize sets the logical sector size of every device (the unit of tearing, rule R6): 512
// or 4096. Every data operation must be aligned to it: a 4 KiB-sector device never receives a
// 512-byte write, so a log that holds one was not recorded on such a device.
func (h *History) SetSectorSize(n int64) error {
	if n != 512 && n != 4096 {
		return &SectorSizeError{Size: n, Op: -1}
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.isData() && (o.Off%n != 0 || o.Len%n != 0) {
			return &SectorSizeError{Size: n, Op: i, Dev: o.Dev, Kind: o.Kind, Off: o.Off, Len: o.Len}
		}
	}
	for dev := range h.SectorSize {
		h.SectorSize[dev] = n
	}
	return nil
}

// FromLog builds the history of an opened pclog.
func FromLog(l *pclog.Log) (*History, error) {
	ops := make([]Op, len(l.Entries))
	for i, e := range l.Entries {
		ops[i] = Op{Kind: e.Kind, Flags: e.Flags, Dev: e.Device, Off: e.Offset, Len: e.Length, Submit: e.Submit, Complete: e.Complete, Name: e.Name}
	}
	return NewHistory(ops, l.Header.Devices)
}

// Point is a crash point: events with sequence numbers below T happened.
type Point struct {
	Index    int    // position in Points(model)
	T        uint64 // crash point in the global order
	Reason   string // human description
	LastMark string // last MARK issued before T ("" if none)
	// MarkOp is the op index of LastMark, or -1.
	MarkOp int
}

// Points lists the crash points model m visits, in order.
func (h *History) Points(m Model) []Point {
	var ts []Point
	add := func(t uint64, why string) { ts = append(ts, Point{T: t, Reason: why}) }
	switch m {
	case Prefix:
		add(0, "start (nothing written)")
		for i := range h.Ops {
			add(h.Ops[i].Complete+1, fmt.Sprintf("after op %d (%s)", i, h.Ops[i].Kind))
		}
	case Flush:
		for i := range h.Ops {
			o := &h.Ops[i]
			if o.isFlush() || o.fua() {
				add(o.Complete+1, fmt.Sprintf("after %s op %d", barrierName(o), i))
			}
		}
		add(h.end, "end of log")
	case Reorder, Torn, Coalesce:
		for i := range h.Ops {
			o := &h.Ops[i]
			switch {
			case o.Kind == pclog.KindMark:
				add(o.Complete+1, fmt.Sprintf("after mark %q (op %d)", o.Name, i))
			case o.isFlush() || o.fua():
				add(o.Complete, fmt.Sprintf("before %s op %d completes", barrierName(o), i))
			}
		}
		add(h.end, "end of log")
	}
	// Order by T, drop duplicates (keep the first reason).
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].T < ts[j].T })
	out := ts[:0]
	for _, p := range ts {
		if len(out) > 0 && out[len(out)-1].T == p.T {
			continue
		}
		out = append(out, p)
	}
	mi := -1
	k := 0
	for i := range out {
		for k < len(h.Ops) && h.Ops[k].Complete < out[i].T {
			if h.Ops[k].Kind == pclog.KindMark {
				mi = k
			}
			k++
		}
		out[i].Index = i
		out[i].MarkOp = mi
		if mi >= 0 {
			out[i].LastMark = h.Ops[mi].Name
		}
	}
	return out
}

func barrierName(o *Op) string {
	switch {
	case o.Kind == pclog.KindFlush:
		return "FLUSH"
	case o.isFlush() && o.fua():
		return "PREFLUSH|FUA " + o.Kind.String()
	case o.isFlush():
		return "PREFLUSH " + o.Kind.String()
	}
	return "FUA " + o.Kind.String()
}

// MarkRange restricts points to those after mark from (exclusive of anything before it) and up
// to and including mark to. Empty names mean no bound.
func (h *History) MarkRange(points []Point, from, to string) ([]Point, error) {
	lo, hi := uint64(0), ^uint64(0)
	if from != "" {
		i := h.FindMark(from)
		if i < 0 {
			return nil, fmt.Errorf("mark %q %w", from, ErrNoSuchMark)
		}
		lo = h.Ops[i].Complete + 1
	}
	if to != "" {
		i := h.FindMark(to)
		if i < 0 {
			return nil, fmt.Errorf("mark %q %w", to, ErrNoSuchMark)
		}
		hi = h.Ops[i].Complete + 1
	}
	if lo > hi {
		return nil, fmt.Errorf("mark %q comes after mark %q", from, to)
	}
	var out []Point
	for _, p := range points {
		if p.T >= lo && p.T <= hi {
			out = append(out, p)
		}
	}
	return out, nil
}

// FindMark returns the op index of the first mark named name, or -1.
func (h *History) FindMark(name string) int {
	for i := range h.Ops {
		if h.Ops[i].Kind == pclog.KindMark && h.Ops[i].Name == name {
			return i
		}
	}
	return -1
}

// End is one past the last sequence number.
func (h *History) End() uint64 { return h.end }

// Durable reports whether data op i is durable at crash point t under model m: it landed whole
// in every state of m at t (rules R1, R2 and, for the in-order models, R8; prefix and flush land
// everything completed before t).
func (h *History) Durable(m Model, i int, t uint64) bool {
	o := &h.Ops[i]
	if !o.isData() {
		return false
	}
	cover, fua := map[uint16]uint64{}, map[uint16]uint64{}
	for k := range h.Ops {
		f := &h.Ops[k]
		if f.Complete >= t {
			break
		}
		if f.isFlush() && f.Submit > cover[f.Dev] {
			cover[f.Dev] = f.Submit
		}
		if f.fua() && f.Complete > fua[f.Dev] {
			fua[f.Dev] = f.Complete
		}
	}
	return m.landedWhole(o, t, cover, fua)
}

// mustPrecede: whenever both d and u land, d is applied before u (R5: d completed before u was
// submitted; an in-order model applies in completion order).
func (m Model) mustPrecede(d, u *Op) bool {
	if m.completionOrdered() {
		return d.Complete < u.Complete
	}
	return d.before(u)
}

// landedWhole is the one statement of "durable at t": op o completed before t and either the
// model lands every completed op (prefix, flush), or o is FUA (R2), or a completed flush of its
// device was submitted after o completed (R1; cover holds, per device, the latest submit point
// of a flush completed before t), or, on an in-order device (prefix, flush, coalesce), a FUA
// write of its device completed after o did (R8; fuaDone holds the latest such completion).
func (m Model) landedWhole(o *Op, t uint64, cover, fuaDone map[uint16]uint64) bool {
	if o.Complete >= t {
		return false
	}
	if m.prefixLike() || o.fua() || o.Complete < cover[o.Dev] {
		return true
	}
	return m.completionOrdered() && o.Complete < fuaDone[o.Dev]
}
