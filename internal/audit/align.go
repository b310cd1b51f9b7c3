package audit

import (
	"errors"
	"fmt"
	"sort"

	"github.com/powercut/powercut/pclog"
)

// ErrAlign marks two recordings that cannot be aligned into one audit recording.
var ErrAlign = errors.New("recordings cannot be aligned")

// AlignInfo says how two recordings were aligned.
type AlignInfo struct {
	// Marks are the marks common to both recordings, in order: the points where their two
	// orders are known to meet.
	Marks []string
	// TopOps and BottomOps count the operations taken from each recording (marks included).
	TopOps, BottomOps int
}

// Align merges a recording of a layer's top and a recording of its bottom, made by two
// recorders that share no clock (dm-log-writes above a kernel layer and powercut below it, say),
// into one audit recording (device 0 top, device 1 bottom) written to out. The two orders are
// known to meet only at the marks both recordings hold (same name, same occurrence), issued while
// the top was idle. Between two such marks the relative order of top and bottom is unknown, so
// Align takes the order that can raise no false alarm: the segment's top submissions first (the
// data the layer may write below is submitted as early as possible), then the segment's bottom
// operations in their own order, then the segment's top completions (what the top promised,
// as late as possible). A breach inside one segment is then missed unless a later bottom crash
// point still shows it: marks after each fsync keep segments short.
//
// It fails (ErrAlign) when the recordings do not have one device each, share no mark, hold
// their common marks in different orders, or the top had an operation in flight at a common
// mark (the order at that mark would be unknown too).
func Align(top, bottom *pclog.Log, out string) (AlignInfo, error) {
	var info AlignInfo
	if len(top.Header.Devices) != 1 || len(bottom.Header.Devices) != 1 {
		return info, fmt.Errorf("%w: the top recording has %d devices and the bottom recording %d; each must have one", ErrAlign, len(top.Header.Devices), len(bottom.Header.Devices))
	}
	tm, bm, err := commonMarks(top, bottom)
	if err != nil {
		return info, err
	}
	for i := range top.Entries {
		// A mark between an op's submission and completion: the op was in flight at it.
		if e := &top.Entries[i]; e.Kind != pclog.KindMark {
			if j := sort.Search(len(tm), func(j int) bool { return tm[j].seq > e.Submit }); j < len(tm) && tm[j].seq < e.Complete {
				return info, fmt.Errorf("%w: top op %d (%s) was in flight at mark %q: issue the marks while the top is idle (after fsync returns)", ErrAlign, i, e.Kind, tm[j].name)
			}
		}
	}
	for _, m := range tm {
		info.Marks = append(info.Marks, m.name)
	}

	// Events: one per submission and one per completion (one per mark), keyed by (segment,
	// class, own sequence number). Classes within a segment: top submissions, bottom events,
	// top completions, the common mark that ends the segment.
	type event struct {
		seg, class int
		seq        uint64
		src        int // 0 top, 1 bottom
		idx        int // entry index in its recording
		submit     bool
	}
	const (
		topSubmit = iota
		bottomAny
		topComplete
		commonMark
	)
	seg := func(marks []markAt, s uint64) int {
		return sort.Search(len(marks), func(j int) bool { return marks[j].seq >= s })
	}
	isCommon := map[[2]int]int{} // (src, idx) -> common mark number
	for j := range tm {
		isCommon[[2]int{0, tm[j].idx}] = j
		isCommon[[2]int{1, bm[j].idx}] = j
	}
	var evs []event
	for src, l := range []*pclog.Log{top, bottom} {
		marks := [][]markAt{tm, bm}[src]
		for i := range l.Entries {
			e := &l.Entries[i]
			if j, ok := isCommon[[2]int{src, i}]; ok {
				if src == 0 {
					evs = append(evs, event{seg: j, class: commonMark, seq: e.Submit, src: src, idx: i})
				}
				continue // the bottom's copy of a common mark is the top's
			}
			if e.Kind == pclog.KindMark {
				class := topSubmit
				if src == 1 {
					class = bottomAny
				}
				evs = append(evs, event{seg: seg(marks, e.Submit), class: class, seq: e.Submit, src: src, idx: i})
				continue
			}
			if src == 0 {
				evs = append(evs, event{seg: seg(marks, e.Submit), class: topSubmit, seq: e.Submit, src: src, idx: i, submit: true},
					event{seg: seg(marks, e.Complete), class: topComplete, seq: e.Complete, src: src, idx: i})
			} else {
				evs = append(evs, event{seg: seg(marks, e.Submit), class: bottomAny, seq: e.Submit, src: src, idx: i, submit: true},
					event{seg: seg(marks, e.Complete), class: bottomAny, seq: e.Complete, src: src, idx: i})
			}
		}
	}
	sort.SliceStable(evs, func(a, b int) bool {
		x, y := evs[a], evs[b]
		if x.seg != y.seg {
			return x.seg < y.seg
		}
		if x.class != y.class {
			return x.class < y.class
		}
		return x.seq < y.seq
	})
	// New sequence numbers: the event's position. A record is written at its completion.
	submitAt := [2]map[int]uint64{{}, {}}
	for k, ev := range evs {
		if ev.submit {
			submitAt[ev.src][ev.idx] = uint64(k + 1)
		}
	}

	h := pclog.Header{Version: pclog.FormatVersion, Source: "audit-align"}
	for src, l := range []*pclog.Log{top, bottom} {
		d := l.Header.Devices[0]
		id := []uint16{Top, Bottom}[src]
		h.Devices = append(h.Devices, pclog.Device{ID: id, Name: []string{"top", "bottom"}[src], Size: d.Size, SectorSize: d.SectorSize})
		if b, ok := l.Header.Base(d.ID); ok {
			b.Device = id
			h.Bases = append(h.Bases, b)
		}
	}
	h.Note = fmt.Sprintf("aligned by powercut audit from %s (top, device %q) and %s (bottom, device %q) on %d common marks",
		top.Path, top.Header.Devices[0].Name, bottom.Path, bottom.Header.Devices[0].Name, len(tm))
	w, err := pclog.Create(out, h)
	if err != nil {
		return info, err
	}
	for k, ev := range evs {
		if ev.submit {
			continue
		}
		l := []*pclog.Log{top, bottom}[ev.src]
		rec, err := l.Record(ev.idx)
		if err != nil {
			w.Close()
			return info, fmt.Errorf("read %s record %d: %w", []string{"top", "bottom"}[ev.src], ev.idx, err)
		}
		rec.Device = []uint16{Top, Bottom}[ev.src]
		rec.Complete = uint64(k + 1)
		if rec.Kind == pclog.KindMark {
			rec.Submit = rec.Complete
		} else {
			rec.Submit = submitAt[ev.src][ev.idx]
		}
		if err := w.Append(rec); err != nil {
			w.Close()
			return info, err
		}
		if ev.src == 0 {
			info.TopOps++
		} else {
			info.BottomOps++
		}
	}
	info.BottomOps += len(tm) // the bottom's copies of the common marks, merged into the top's
	return info, w.Close()
}

// markAt is a mark of one recording: its name, its entry index and sequence number.
type markAt struct {
	name string
	idx  int
	seq  uint64
}

// commonMarks returns the marks both recordings hold (the k-th occurrence of a name pairs with
// the k-th), in order, as found in each; their orders must agree.
func commonMarks(top, bottom *pclog.Log) (tm, bm []markAt, err error) {
	list := func(l *pclog.Log) map[string][]markAt {
		m := map[string][]markAt{}
		for i := range l.Entries {
			if e := &l.Entries[i]; e.Kind == pclog.KindMark {
				m[e.Name] = append(m[e.Name], markAt{name: e.Name, idx: i, seq: e.Complete})
			}
		}
		return m
	}
	ta, ba := list(top), list(bottom)
	for name, ts := range ta {
		bs := ba[name]
		for k := 0; k < len(ts) && k < len(bs); k++ {
			tm = append(tm, ts[k])
			bm = append(bm, bs[k])
		}
	}
	if len(tm) == 0 {
		return nil, nil, fmt.Errorf("%w: no mark is in both recordings (issue the same marks above and below the layer)", ErrAlign)
	}
	// Order both by the top's order; the bottom's must then be increasing too.
	ord := make([]int, len(tm))
	for i := range ord {
		ord[i] = i
	}
	sort.Slice(ord, func(a, b int) bool { return tm[ord[a]].seq < tm[ord[b]].seq })
	t2, b2 := make([]markAt, len(tm)), make([]markAt, len(bm))
	for i, o := range ord {
		t2[i], b2[i] = tm[o], bm[o]
	}
	for i := 1; i < len(b2); i++ {
		if b2[i].seq < b2[i-1].seq {
			return nil, nil, fmt.Errorf("%w: mark %q comes before %q in the top recording but after it in the bottom recording", ErrAlign, b2[i-1].name, b2[i].name)
		}
	}
	return t2, b2, nil
}
