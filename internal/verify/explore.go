package verify

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Oracle names of the violations ExploreChecker reports.
const (
	// OracleModel: a block holds content the durability model does not allow at the crash point
	// (a version that cannot be there, a torn or garbage block).
	OracleModel = "verify"
	// OracleFlush: a block lost a write the workload had been told was durable (the device
	// acknowledged a FLUSH that the recording shows never reached it).
	OracleFlush = "verify-flush"
)

// maxViolationsPerState bounds the report of one crash state.
const maxViolationsPerState = 16

// ExploreChecker checks every block of the verify region in a crash image of a recorded verify
// workload. For each block it computes, from the recording and the crash point, the set of
// operations whose content the durability model allows the block to show, and checks that the
// block holds one of them (per sector under model torn). It also checks the promises the workload
// received: the workload marks each flush it issues ("verify-flush-N-begin" before, and
// "verify-flush-N-done" after it was acknowledged), and after the done mark every block must hold
// the write it had completed before the begin mark, or a newer one. A device that acknowledges a
// FLUSH without persisting (so the recording holds no FLUSH) passes the first check and fails
// the second.
type ExploreChecker struct {
	id        Identity
	trackFile string

	mu  sync.Mutex
	idx map[*pclog.Log]*logIndex
}

// NewExploreChecker returns the checker for the run described by a track file (not deleted:
// exploring does not consume expectations).
func NewExploreChecker(trackFile string) (explore.Checker, error) {
	id, _, err := loadTrack(trackFile)
	if err != nil {
		return nil, err
	}
	return &ExploreChecker{id: id, trackFile: trackFile, idx: map[*pclog.Log]*logIndex{}}, nil
}

// Reads implements explore.ContextReader: the flush promise depends on the last mark; covered
// marks are not read.
func (c *ExploreChecker) Reads() explore.Reads { return explore.ReadsLastMark }

type opBlock struct {
	op    int
	block int64
}

type flushPromise struct {
	n             int
	beginComplete uint64 // writes completed before the begin mark are promised
	doneComplete  uint64 // once the done mark was issued
}

// logIndex is what the checker derives once per recording.
type logIndex struct {
	log     *pclog.Log
	devs    []uint16
	ops     map[uint16][][]int                  // per device, per block: data ops covering it, completion order
	version map[opBlock]uint64                  // WRITE op x block -> version its data carries (0: not ours)
	byVer   map[uint16]map[int64]map[uint64]int // dev -> block -> version -> op
	flushes []flushPromise
}

func (c *ExploreChecker) index(l *pclog.Log) (*logIndex, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if x, ok := c.idx[l]; ok {
		return x, nil
	}
	x, err := buildIndex(l, c.id)
	if err != nil {
		return nil, fmt.Errorf("track file %s: %w", c.trackFile, err)
	}
	c.idx[l] = x
	return x, nil
}

func buildIndex(l *pclog.Log, id Identity) (*logIndex, error) {
	bs, nblocks := id.BlockSize, id.Size/id.BlockSize
	x := &logIndex{log: l, ops: map[uint16][][]int{}, version: map[opBlock]uint64{}, byVer: map[uint16]map[int64]map[uint64]int{}}
	hb := make([]byte, HeaderSize)
	found := map[uint16]bool{}
	begins := map[int]uint64{}
	for i := range l.Entries {
		e := &l.Entries[i]
		switch e.Kind {
		case pclog.KindMark:
			var n int
			if rest, ok := strings.CutPrefix(e.Name, "verify-flush-"); ok {
				num, what, _ := strings.Cut(rest, "-")
				var err error
				if n, err = strconv.Atoi(num); err != nil {
					continue
				}
				switch what {
				case "begin":
					begins[n] = e.Complete
				case "done":
					if b, ok := begins[n]; ok {
						x.flushes = append(x.flushes, flushPromise{n: n, beginComplete: b, doneComplete: e.Complete})
					}
				}
			}
			continue
		case pclog.KindWrite, pclog.KindWriteZeroes, pclog.KindDiscard:
		default:
			continue
		}
		d, _ := l.Header.Device(e.Device)
		if id.Offset+id.Size > d.Size {
			continue
		}
		if x.ops[e.Device] == nil {
			x.ops[e.Device] = make([][]int, nblocks)
		}
		first := max(0, (e.Offset-id.Offset)/bs)
		last := min(nblocks, (e.Offset+e.Length-id.Offset+bs-1)/bs)
		for b := first; b < last; b++ {
			boff := id.Offset + b*bs
			if boff+bs <= e.Offset || boff >= e.Offset+e.Length {
				continue
			}
			x.ops[e.Device][b] = append(x.ops[e.Device][b], i)
			if e.Kind != pclog.KindWrite || boff < e.Offset || boff+bs > e.Offset+e.Length {
				continue
			}
			if err := l.ReadData(i, hb, boff-e.Offset); err != nil {
				return nil, err
			}
			h := parseHeader(hb)
			if h.ours() && h.runID == id.RunID && h.offset == uint64(boff) {
				x.version[opBlock{i, b}] = h.version
				if x.byVer[e.Device] == nil {
					x.byVer[e.Device] = map[int64]map[uint64]int{}
				}
				if x.byVer[e.Device][b] == nil {
					x.byVer[e.Device][b] = map[uint64]int{}
				}
				x.byVer[e.Device][b][h.version] = i
				found[e.Device] = true
			}
		}
	}
	for d := range found {
		x.devs = append(x.devs, d)
	}
	sort.Slice(x.devs, func(i, j int) bool { return x.devs[i] < x.devs[j] })
	if len(x.devs) == 0 {
		return nil, fmt.Errorf("the recording %s holds no block of verify run %016x (region offset %d, size %d, block size %d): was this workload recorded?",
			l.Path, id.RunID, id.Offset, id.Size, bs)
	}
	return x, nil
}

// source is one content a block may show: a WRITE op, zeros or the base.
type source struct {
	op   int // >= 0: WRITE op; model.SrcZero; model.SrcBase
	note string
}

// allowed returns the contents block b of dev may show in candidate c: the model's own answer
// (model.Epoch.MayShow, the per-sector statement of its rules) for the operations that wrote the
// block.
func (x *logIndex) allowed(c *explore.Candidate, dev uint16, b int64) []source {
	var out []source
	for _, v := range c.MayShow(x.ops[dev][b]) {
		note := "possibly persisted"
		switch {
		case v.Src == model.SrcBase:
			note = "base"
		case v.Carried:
			note = "coalesced"
		case v.Durable:
			note = "durable"
		}
		out = append(out, source{op: v.Src, note: note})
	}
	return out
}

// content reads what source s puts in block b (nil base: zeros).
func (x *logIndex) content(s source, base io.ReaderAt, boff, bs int64, buf []byte) error {
	switch {
	case s.op >= 0:
		return x.log.ReadData(s.op, buf, boff-x.log.Entries[s.op].Offset)
	case s.op == model.SrcZero || base == nil:
		clear(buf)
		return nil
	}
	n, err := base.ReadAt(buf, boff)
	if err == io.EOF {
		clear(buf[n:])
		err = nil
	}
	return err
}

// Cheap implements explore.Cheap: the checker reads the blocks in process.
func (c *ExploreChecker) Cheap() bool { return true }

// Check implements explore.Checker.
func (c *ExploreChecker) Check(ctx context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	if cand.Log == nil {
		return nil, fmt.Errorf("verify checker: the candidate carries no recording")
	}
	x, err := c.index(cand.Log)
	if err != nil {
		return nil, err
	}
	bs, nblocks := c.id.BlockSize, c.id.Size/c.id.BlockSize
	var promise *flushPromise
	for k := range x.flushes {
		if x.flushes[k].doneComplete < cand.Point.T {
			promise = &x.flushes[k]
		}
	}
	var viols []explore.Violation
	extra := 0
	report := func(v explore.Violation) {
		if len(viols) < maxViolationsPerState {
			viols = append(viols, v)
		} else {
			extra++
		}
	}
	got := make([]byte, bs)
	want := make([]byte, bs)
	for _, dev := range x.devs {
		img := cand.Images[dev]
		if img == nil {
			return nil, fmt.Errorf("verify checker: candidate %s has no image of device %d", cand.ID, dev)
		}
		d, _ := x.log.Header.Device(dev)
		ss := int64(d.SectorSize)
		base := cand.Bases[dev]
		for b := int64(0); b < nblocks; b++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			boff := c.id.Offset + b*bs
			if _, err := img.ReadAt(got, boff); err != nil && err != io.EOF {
				return nil, fmt.Errorf("read crash image of device %d at 0x%x: %w", dev, boff, err)
			}
			srcs := x.allowed(cand, dev, b)
			ok, err := x.matches(got, want, srcs, base, boff, bs, ss, cand.Model == model.Torn)
			if err != nil {
				return nil, err
			}
			if !ok {
				report(explore.Violation{Oracle: OracleModel, Detail: fmt.Sprintf("device %d block 0x%x: holds %s; the model allows %s at this crash point",
					dev, boff, x.describe(got, dev, b, boff, c.id.RunID), x.describeSources(srcs, b))})
				continue
			}
			if promise != nil {
				if v := x.checkPromise(promise, got, dev, b, boff, c.id.RunID, cand.Point.T); v != "" {
					report(explore.Violation{Oracle: OracleFlush, Detail: fmt.Sprintf("device %d block 0x%x: %s", dev, boff, v)})
				}
			}
		}
	}
	if extra > 0 {
		viols = append(viols, explore.Violation{Oracle: OracleModel, Detail: fmt.Sprintf("and %d more bad blocks in this state", extra)})
	}
	return viols, nil
}

// matches reports whether got equals one allowed source (or, torn, each sector equals the same
// sector of one).
func (x *logIndex) matches(got, want []byte, srcs []source, base io.ReaderAt, boff, bs, ss int64, torn bool) (bool, error) {
	var secOK []bool
	if torn {
		secOK = make([]bool, bs/ss)
	}
	for _, s := range srcs {
		if err := x.content(s, base, boff, bs, want); err != nil {
			return false, fmt.Errorf("content of %v at 0x%x: %w", s, boff, err)
		}
		if string(got) == string(want) {
			return true, nil
		}
		for k := range secOK {
			if string(got[int64(k)*ss:int64(k+1)*ss]) == string(want[int64(k)*ss:int64(k+1)*ss]) {
				secOK[k] = true
			}
		}
	}
	if !torn {
		return false, nil
	}
	for _, ok := range secOK {
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// describe says what a block holds, for a violation: which version (and the op that wrote it),
// a misdirected or foreign block, zeros, or damage.
func (x *logIndex) describe(got []byte, dev uint16, b, boff int64, runID uint64) string {
	h, ok := intact(got)
	switch {
	case ok && h.runID == runID && h.offset == uint64(boff):
		if op, ok := x.byVer[dev][b][h.version]; ok {
			return fmt.Sprintf("version %d (op %d)", h.version, op)
		}
		return fmt.Sprintf("version %d, which the recording never wrote", h.version)
	case ok && h.runID == runID:
		return fmt.Sprintf("a block written for offset 0x%x (version %d): misdirected", h.offset, h.version)
	case ok:
		return fmt.Sprintf("a block of another run (%016x)", h.runID)
	case isZero(got):
		return "zeros"
	case h.ours():
		return fmt.Sprintf("a damaged block (header: version %d, checksum fails: torn or corrupt)", h.version)
	}
	return "data that is not a verify block"
}

func (x *logIndex) describeSources(srcs []source, b int64) string {
	var s []string
	for _, src := range srcs {
		switch {
		case src.op >= 0:
			s = append(s, fmt.Sprintf("version %d (op %d, %s)", x.version[opBlock{src.op, b}], src.op, src.note))
		case src.op == model.SrcZero:
			s = append(s, "zeros ("+src.note+")")
		default:
			s = append(s, "the base content")
		}
	}
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// checkPromise checks the last acknowledged flush: the newest operation on the block completed
// before the flush's begin mark (P) must not have been lost, i.e. the block must hold P or an
// operation that did not complete before P was submitted.
func (x *logIndex) checkPromise(p *flushPromise, got []byte, dev uint16, b, boff int64, runID uint64, t uint64) string {
	ents := x.log.Entries
	P := -1
	for _, i := range x.ops[dev][b] {
		if ents[i].Complete < p.beginComplete && ents[i].Kind != pclog.KindDiscard {
			P = i
		}
	}
	if P < 0 {
		return ""
	}
	promised := "zeros"
	if ents[P].Kind == pclog.KindWrite {
		promised = fmt.Sprintf("version %d", x.version[opBlock{P, b}])
	}
	lost := func(held string) string {
		return fmt.Sprintf("lost a flushed write: holds %s, but %s (op %d) completed before flush %d, which was acknowledged (mark verify-flush-%d-done): the device did not persist it",
			held, promised, P, p.n, p.n)
	}
	h, ok := intact(got)
	if ok && h.runID == runID && h.offset == uint64(boff) {
		H, known := x.byVer[dev][b][h.version]
		if !known {
			return ""
		}
		if H != P && ents[H].Complete < ents[P].Submit {
			return lost(fmt.Sprintf("version %d (op %d)", h.version, H))
		}
		return ""
	}
	if isZero(got) {
		for _, i := range x.ops[dev][b] {
			if ents[i].Kind != pclog.KindWrite && ents[i].Submit < t && !(ents[i].Complete < ents[P].Submit) {
				return ""
			}
		}
		return lost("zeros")
	}
	return ""
}
