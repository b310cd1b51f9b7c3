// Package audit checks a block layer (a cache, a qcow2 driver, dm-crypt, the loop device) for
// flush-ordering bugs: it records what clients asked of the layer (the top device) and what the
// layer did to the device below (the bottom device) in one global order, and checks that every
// crash state the bottom can be left in is one the top's durability model allows at the same
// crash point. A layer that acknowledges a FLUSH before the writes it covers reached the device
// below, or reorders across a FLUSH, loses acknowledged data in some bottom state; the check
// names the top operation and the FLUSH or FUA that made it durable.
//
// Why bottom states only: the bottom is what survives a power cut. Its states are enumerated
// by explore with the model restricted to the bottom device (explore.Source.Devices); each is
// decoded into the top's view (identity, or a command such as qemu-img convert) and compared,
// sector by sector, with the versions the top model allows at the same crash point T
// (model.Epoch.MayShow over a top-only history). The bottom's crash points suffice: between
// two of them the bottom's states only grow and the top's promises only grow, so a breach at
// any T shows at the next bottom crash point (docs/audit.md).
package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/zeebo/xxh3"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Device IDs of an audit recording.
const (
	Top    uint16 = 0
	Bottom uint16 = 1
)

// Oracle is the name violations of the audit carry.
const Oracle = "audit"

// ErrNotAudit: the recording does not have the two devices an audit needs.
var ErrNotAudit = errors.New("not an audit recording (want devices 0 \"top\" and 1 \"bottom\")")

// Decoder turns a bottom image into the top's view. It returns the view and a function that
// releases it. A decoder that cannot make sense of the image returns an error wrapping
// ErrUndecodable (a violation: the layer left a state it cannot read back); any other error is
// a tool error.
type Decoder func(ctx context.Context, bottom io.ReaderAt, size int64) (io.ReaderAt, func(), error)

// ErrUndecodable marks a bottom image the decoder rejected.
var ErrUndecodable = errors.New("bottom image does not decode")

// Config configures a check.
type Config struct {
	// TopBase is the top's initial content (nil: zeros). With the identity decoder it is the
	// bottom's base; with another decoder, the decoded bottom base.
	TopBase io.ReaderAt
	// Decode is nil for the identity (the top's sector x is the bottom's sector x).
	Decode Decoder
	Model  model.Model
	Policy model.DiscardPolicy
}

// Checker is the explore.Checker of an audit: it checks one bottom crash state.
type Checker struct {
	cfg     Config
	log     *pclog.Log
	th      *model.History // top-only history
	ss      int64          // top sector size
	size    int64          // top size
	sectors []int64        // sectors to check, sorted (top sectors written, plus bottom ones under identity)
	// Per checked sector (by its position in sectors): the top ops covering it, the suffix
	// minimum of their submit points, and the top base's hash.
	cover  [][]int
	minSub [][]uint64
	base   []uint64
	opHash [][]uint64 // per top WRITE op (log index), per sector
	zero   uint64

	// botHash is, under the identity view, the hash of every sector each bottom WRITE wrote:
	// a bottom state is then judged from where its sectors come from (image.Segment), unread.
	botHash [][]uint64

	mu     sync.Mutex
	epochs map[uint64]*model.Epoch
	tables map[uint64]*allowTable
	order  []uint64 // crash points of tables, oldest first
	bufs   sync.Pool
}

// allowTable is, for one crash point, the hashes each checked sector may show: those of sector
// c.sectors[k] are hashes[offs[k]:offs[k+1]]. Every state of a crash point shares it, so the
// model is asked once per point, not once per state. Under the identity view it also holds the
// verdict on the crash point's shared settled layer (image.Image.Shared): the checked sectors
// whose shared content is not allowed. A state is then judged by its own extents only.
type allowTable struct {
	once   sync.Once
	offs   []uint32
	hashes []uint64

	sharedOnce sync.Once
	shared     *model.LayerSnap
	sharedOK   bool      // every checked sector has one source in the shared layer
	sharedBad  []failure // checked sectors whose shared content is not allowed, in order
}

func (tb *allowTable) allows(k int, h uint64) bool {
	return slices.Contains(tb.hashes[tb.offs[k]:tb.offs[k+1]], h)
}

// failure is a checked sector (its position in c.sectors) showing content h it may not show.
type failure struct {
	k int
	h uint64
}

// maxTables bounds the crash points whose tables are kept: explore checks a point's states
// together, a few workers at a time.
const maxTables = 8

// NewChecker indexes the top side of an audit recording: which top operations cover each top
// sector, and the hash of every sector they wrote. Cost: one pass over the top's data.
func NewChecker(l *pclog.Log, cfg Config) (*Checker, error) {
	top, bot, err := devices(l)
	if err != nil {
		return nil, err
	}
	if cfg.Model == 0 {
		cfg.Model = model.Reorder
	}
	th, err := model.FromLog(l)
	if err != nil {
		return nil, fmt.Errorf("audit: top history: %w", err)
	}
	only(th, Top)
	c := &Checker{cfg: cfg, log: l, th: th, ss: int64(top.SectorSize), size: top.Size,
		opHash: make([][]uint64, len(l.Entries)), epochs: map[uint64]*model.Epoch{}, tables: map[uint64]*allowTable{}}
	cover := map[int64][]int{}
	c.zero = xxh3.Hash(make([]byte, c.ss))
	c.bufs.New = func() any { b := make([]byte, 256*c.ss); return &b }
	buf := make([]byte, 1<<20)
	for i := range th.Ops {
		o := &th.Ops[i]
		if o.Dev != Top || !isData(o.Kind) {
			continue
		}
		n := o.Len / c.ss
		for k := int64(0); k < n; k++ {
			x := o.Off/c.ss + k
			cover[x] = append(cover[x], i)
		}
		if o.Kind != pclog.KindWrite {
			continue
		}
		if c.opHash[i], err = sectorHashes(l, i, o.Len, c.ss, buf); err != nil {
			return nil, fmt.Errorf("audit: read top op %d: %w", i, err)
		}
	}
	for x := range cover {
		c.sectors = append(c.sectors, x)
	}
	if cfg.Decode == nil {
		// Identity: a sector the layer wrote that no top op covers must still read as the top's
		// base (a layer scribbling outside what it was asked to write).
		if bot.Size != top.Size || bot.SectorSize != top.SectorSize {
			return nil, fmt.Errorf("audit: identity view needs equal devices (top %d bytes / %d-byte sectors, bottom %d / %d): give a decoder", top.Size, top.SectorSize, bot.Size, bot.SectorSize)
		}
		c.botHash = make([][]uint64, len(l.Entries))
		for i := range l.Entries {
			e := &l.Entries[i]
			if e.Device != Bottom || !isData(e.Kind) {
				continue
			}
			if e.Kind == pclog.KindWrite {
				if c.botHash[i], err = sectorHashes(l, i, e.Length, c.ss, buf); err != nil {
					return nil, fmt.Errorf("audit: read bottom op %d: %w", i, err)
				}
			}
			for x := e.Offset / c.ss; x < (e.Offset+e.Length)/c.ss; x++ {
				if _, ok := cover[x]; !ok {
					cover[x] = nil
					c.sectors = append(c.sectors, x)
				}
			}
		}
	}
	sort.Slice(c.sectors, func(i, j int) bool { return c.sectors[i] < c.sectors[j] })
	// The top's epoch at every crash point of the bottom, in one walk (a walk per point would
	// cost the log's length each).
	bh, err := model.FromLog(l)
	if err != nil {
		return nil, fmt.Errorf("audit: bottom history: %w", err)
	}
	only(bh, Bottom)
	w := th.Walk(cfg.Model, cfg.Policy)
	for _, p := range bh.Points(cfg.Model) {
		c.epochs[p.T] = w.Epoch(model.Point{T: p.T, MarkOp: -1})
	}
	c.cover = make([][]int, len(c.sectors))
	c.minSub = make([][]uint64, len(c.sectors))
	c.base = make([]uint64, len(c.sectors))
	for k, x := range c.sectors {
		ops := cover[x]
		c.cover[k] = ops
		ms := make([]uint64, len(ops)+1)
		ms[len(ops)] = ^uint64(0)
		for j := len(ops) - 1; j >= 0; j-- {
			ms[j] = min(ms[j+1], th.Ops[ops[j]].Submit)
		}
		c.minSub[k] = ms
	}
	sec := make([]byte, c.ss)
	for k, x := range c.sectors {
		if cfg.TopBase == nil {
			c.base[k] = c.zero
			continue
		}
		clear(sec)
		if _, err := cfg.TopBase.ReadAt(sec, x*c.ss); err != nil && err != io.EOF {
			return nil, fmt.Errorf("audit: read top base at sector %d: %w", x, err)
		}
		c.base[k] = xxh3.Hash(sec)
	}
	return c, nil
}

// sectorHashes hashes every sector log entry i wrote.
func sectorHashes(l *pclog.Log, i int, length, ss int64, buf []byte) ([]uint64, error) {
	hs := make([]uint64, length/ss)
	for done := int64(0); done < length; {
		m := min(int64(len(buf)), length-done)
		if err := l.ReadData(i, buf[:m], done); err != nil {
			return nil, err
		}
		for k := int64(0); k < m/ss; k++ {
			hs[done/ss+k] = xxh3.Hash(buf[k*ss : (k+1)*ss])
		}
		done += m
	}
	return hs, nil
}

func isData(k pclog.Kind) bool {
	return k == pclog.KindWrite || k == pclog.KindWriteZeroes || k == pclog.KindDiscard
}

// devices returns the top and bottom devices of an audit recording.
func devices(l *pclog.Log) (top, bot pclog.Device, err error) {
	var okT, okB bool
	for _, d := range l.Header.Devices {
		switch d.ID {
		case Top:
			top, okT = d, true
		case Bottom:
			bot, okB = d, true
		}
	}
	if !okT || !okB {
		return top, bot, ErrNotAudit
	}
	return top, bot, nil
}

// only turns every op of another device than dev into a no-op (kind 0: neither data, flush nor
// mark), keeping log indices, as explore.Source.Devices does.
func only(h *model.History, dev uint16) {
	for i := range h.Ops {
		if o := &h.Ops[i]; o.Dev != dev && o.Kind != pclog.KindMark {
			o.Kind, o.Flags = 0, 0
		}
	}
}

// Sectors is the number of top sectors each state is checked on.
func (c *Checker) Sectors() int { return len(c.sectors) }

// Reads: the verdict depends on the image and the crash point (the same bottom image can be
// fine before a top FLUSH is acknowledged and a breach after), so states are deduplicated per
// crash point.
func (c *Checker) Reads() explore.Reads { return explore.ReadsPoint }

// Cheap: the check runs in process.
func (c *Checker) Cheap() bool { return c.cfg.Decode == nil }

func (c *Checker) epoch(t uint64) *model.Epoch {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.epochs[t]
	if !ok {
		e = c.th.Epoch(c.cfg.Model, c.cfg.Policy, model.Point{T: t, MarkOp: -1})
		c.epochs[t] = e
	}
	return e
}

// breach is what one checked sector found.
type breach struct {
	op     int   // the durable top op whose content is missing (-1: none, content unexplained)
	first  int64 // first sector
	n      int   // sectors
	shows  string
	allows string
}

// table returns the allowed hashes of every checked sector at crash point t, built once.
func (c *Checker) table(t uint64) *allowTable {
	c.mu.Lock()
	tb, ok := c.tables[t]
	if !ok {
		tb = &allowTable{}
		c.tables[t] = tb
		c.order = append(c.order, t)
		if len(c.order) > maxTables {
			delete(c.tables, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	tb.once.Do(func() {
		e := c.epoch(t)
		tb.offs = make([]uint32, len(c.sectors)+1)
		tb.hashes = make([]uint64, 0, len(c.sectors)+len(c.sectors)/2)
		for k, x := range c.sectors {
			for _, v := range e.MayShow(c.relevant(e, k, t)) {
				tb.hashes = append(tb.hashes, c.versionHash(k, x, v))
			}
			tb.offs[k+1] = uint32(len(tb.hashes))
		}
	})
	return tb
}

// Check compares the decoded bottom image of c with the versions the top model allows at its
// crash point, on every checked sector.
func (c *Checker) Check(ctx context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	img := cand.Images[Bottom]
	var view io.ReaderAt = img
	if c.cfg.Decode != nil {
		v, done, err := c.cfg.Decode(ctx, img, img.Size())
		if errors.Is(err, ErrUndecodable) {
			return []explore.Violation{{Oracle: Oracle, Detail: "the bottom image does not decode into the top's view: the layer left a state it cannot read back", Output: err.Error()}}, nil
		}
		if err != nil {
			return nil, err
		}
		defer done()
		view = v
	}
	t := cand.Point.T
	tb := c.table(t)
	var fails []failure
	ok := false
	if c.botHash != nil {
		fails, ok = c.ownFailures(tb, img)
	}
	if !ok {
		var err error
		if fails, err = c.scanFailures(view, img, tb); err != nil {
			return nil, err
		}
	}
	return c.violations(fails, t), nil
}

// ownFailures judges an identity-view state by its own extents, with the shared layer's
// verdict from the crash point's table. ok is false when it cannot (a sector with two sources,
// another shared layer than the table's): the caller scans every sector.
func (c *Checker) ownFailures(tb *allowTable, img *image.Image) (fails []failure, ok bool) {
	sh := img.Shared()
	tb.sharedOnce.Do(func() {
		tb.shared = sh
		tb.sharedBad, tb.sharedOK = c.sharedFailures(tb, img)
	})
	if !tb.sharedOK || sh != tb.shared {
		return nil, false
	}
	bad, bi := tb.sharedBad, 0
	for _, e := range img.Own() {
		if e.Off%c.ss != 0 || e.Len%c.ss != 0 {
			return nil, false
		}
		lo := sort.Search(len(c.sectors), func(i int) bool { return c.sectors[i]*c.ss >= e.Off })
		hi := lo + sort.Search(len(c.sectors)-lo, func(i int) bool { return c.sectors[lo+i]*c.ss >= e.Off+e.Len })
		for ; bi < len(bad) && bad[bi].k < lo; bi++ {
			fails = append(fails, bad[bi])
		}
		for ; bi < len(bad) && bad[bi].k < hi; bi++ {
			// covered by the state's own extent: judged below
		}
		for k := lo; k < hi; k++ {
			h, ok := c.extentHash(e, k)
			if !ok {
				return nil, false
			}
			if !tb.allows(k, h) {
				fails = append(fails, failure{k, h})
			}
		}
	}
	return append(fails, bad[bi:]...), true
}

// sharedFailures judges the shared layer of img alone on every checked sector.
func (c *Checker) sharedFailures(tb *allowTable, img *image.Image) ([]failure, bool) {
	var bad []failure
	seg := segmenter{lookup: img.SharedSegment}
	for k := range c.sectors {
		h, ok := c.segmentHash(&seg, k)
		if !ok {
			return nil, false
		}
		if !tb.allows(k, h) {
			bad = append(bad, failure{k, h})
		}
	}
	return bad, true
}

// scanFailures judges every checked sector of the view: from where each comes from under the
// identity view where that says, else read.
func (c *Checker) scanFailures(view io.ReaderAt, img *image.Image, tb *allowTable) ([]failure, error) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	hs := make([]uint64, 0, 256)
	seg := segmenter{lookup: img.Segment}
	var fails []failure
	for k := 0; k < len(c.sectors); {
		// A run of contiguous sectors at once.
		j := k + 1
		for j < len(c.sectors) && c.sectors[j] == c.sectors[j-1]+1 && j-k < 256 {
			j++
		}
		var err error
		if hs, err = c.hashes(view, &seg, k, j, buf, hs[:0]); err != nil {
			return nil, err
		}
		for s := k; s < j; s++ {
			if h := hs[s-k]; !tb.allows(s, h) {
				fails = append(fails, failure{s, h})
			}
		}
		k = j
	}
	return fails, nil
}

// violations turns the failing sectors (in sector order) into breaches: one per durable top
// operation whose content is missing (counting its sectors) or per unexplained sector, at most 16.
func (c *Checker) violations(fails []failure, t uint64) []explore.Violation {
	var out []*breach
	byOp := map[int]*breach{}
	var e *model.Epoch
	for _, f := range fails {
		if e == nil {
			e = c.epoch(t)
		}
		x := c.sectors[f.k]
		vs := e.MayShow(c.relevant(e, f.k, t))
		op := -1
		for _, v := range vs {
			if v.Durable && v.Op > op {
				op = v.Op
			}
		}
		if br := byOp[op]; br != nil && op >= 0 {
			br.n++
			continue
		}
		br := &breach{op: op, first: x, n: 1, shows: c.describe(f.k, f.h), allows: c.describeAllowed(vs)}
		out = append(out, br)
		if op >= 0 {
			byOp[op] = br
		}
		if len(out) >= 16 {
			break
		}
	}
	var viols []explore.Violation
	for _, br := range out {
		viols = append(viols, explore.Violation{Oracle: Oracle, Detail: c.detail(br, t)})
	}
	return viols
}

// hashes appends to hs the hash of each checked sector c.sectors[k:j] (contiguous) of the view.
// Under the identity view they come from the hashes of what each bottom operation wrote, found
// through the image's segments; a sector no precomputed hash describes (an extent not aligned to
// sectors) and every decoded view are read.
func (c *Checker) hashes(view io.ReaderAt, seg *segmenter, k, j int, buf []byte, hs []uint64) ([]uint64, error) {
	if c.botHash != nil {
		for s := k; s < j; s++ {
			h, ok := c.segmentHash(seg, s)
			if !ok {
				return c.readHashes(view, k, j, buf, hs[:0])
			}
			hs = append(hs, h)
		}
		return hs, nil
	}
	return c.readHashes(view, k, j, buf, hs)
}

// segmentHash is the hash of bottom sector x from where it comes from, unread; ok is false when
// no precomputed hash describes it.
func (c *Checker) segmentHash(seg *segmenter, k int) (uint64, bool) {
	off := c.sectors[k] * c.ss
	e, ok, end := seg.at(off)
	if end < off+c.ss {
		return 0, false // the sector has more than one source
	}
	if !ok {
		return c.base[k], true
	}
	return c.extentHash(e, k)
}

// extentHash is the hash of sector x, which extent e covers whole.
func (c *Checker) extentHash(e model.Extent, k int) (uint64, bool) {
	x := c.sectors[k]
	switch {
	case e.Op == model.SrcZero:
		return c.zero, true
	case e.Op >= 0:
		hs := c.botHash[e.Op]
		rel := e.OpOff + x*c.ss - e.Off
		if hs == nil || rel%c.ss != 0 || rel < 0 || rel/c.ss >= int64(len(hs)) {
			return 0, false
		}
		return hs[rel/c.ss], true
	}
	return c.base[k], true
}

// readHashes reads sectors c.sectors[k:j] of the view and appends their hashes to hs.
func (c *Checker) readHashes(view io.ReaderAt, k, j int, buf []byte, hs []uint64) ([]uint64, error) {
	x0 := c.sectors[k]
	b := buf[:int64(j-k)*c.ss]
	clear(b)
	if n, err := view.ReadAt(b, x0*c.ss); err != nil && err != io.EOF {
		return nil, fmt.Errorf("audit: read the top view at sector %d: %w", x0, err)
	} else if n < len(b) {
		clear(b[n:])
	}
	for s := 0; s < j-k; s++ {
		hs = append(hs, xxh3.Hash(b[int64(s)*c.ss:int64(s+1)*c.ss]))
	}
	return hs, nil
}

// segmenter walks segments (image.Image.Segment or SharedSegment) for increasing offsets,
// looking each up once.
type segmenter struct {
	lookup   func(off int64) (model.Extent, bool, int64)
	e        model.Extent
	ok       bool
	from, to int64
	valid    bool
}

// at returns the segment holding off, clipped to start at off.
func (g *segmenter) at(off int64) (model.Extent, bool, int64) {
	if !g.valid || off < g.from || off >= g.to {
		g.e, g.ok, g.to = g.lookup(off)
		g.from, g.valid = off, true
	}
	e := g.e
	if g.ok && e.Op >= 0 {
		e.OpOff += off - g.from
	}
	e.Len -= off - g.from
	e.Off = off
	return e, g.ok, g.to
}

// relevant returns the ops covering sector x that can matter at crash point t, so MayShow costs
// what is in flight and since the last durable overwrite, not the sector's whole history: ops
// submitted at or after t are neither pending nor durable, and ops that completed before the
// latest durable overwriting op D was submitted must precede D, which hides them (R4). MayShow
// gives the same versions for this slice as for the whole list.
func (c *Checker) relevant(e *model.Epoch, k int, t uint64) []int {
	ops, ms := c.cover[k], c.minSub[k]
	end := sort.Search(len(ops), func(j int) bool { return ms[j] >= t })
	for j := end - 1; j >= 0; j-- {
		i := ops[j]
		o := &c.th.Ops[i]
		if e.IsFixed(i) && !(o.Kind == pclog.KindDiscard && c.cfg.Policy != model.DiscardZero) {
			start := sort.Search(j, func(m int) bool { return c.th.Ops[ops[m]].Complete >= o.Submit })
			return ops[start:end]
		}
	}
	return ops[:end]
}

// versionHash is the hash of version v of checked sector k (sector x).
func (c *Checker) versionHash(k int, x int64, v model.Version) uint64 {
	switch {
	case v.Src == model.SrcZero:
		return c.zero
	case v.Src == model.SrcBase:
		return c.base[k]
	}
	o := &c.th.Ops[v.Src]
	return c.opHash[v.Src][x-o.Off/c.ss]
}

// describe says what sector x holds: a top write's data (and whether it was overwritten before
// t), zeros, the base, or bytes no top operation wrote.
func (c *Checker) describe(k int, h uint64) string {
	x := c.sectors[k]
	var parts []string
	for i := len(c.cover[k]) - 1; i >= 0; i-- {
		op := c.cover[k][i]
		o := &c.th.Ops[op]
		if o.Kind == pclog.KindWrite && c.opHash[op][x-o.Off/c.ss] == h {
			parts = append(parts, fmt.Sprintf("the data of top op %d (%s)", op, o.Kind))
			break
		}
	}
	switch {
	case len(parts) > 0:
	case h == c.base[k]:
		parts = append(parts, "the top's base content")
	case h == c.zero:
		parts = append(parts, "zeros")
	default:
		parts = append(parts, "bytes no top operation wrote")
	}
	return parts[0]
}

func (c *Checker) describeAllowed(vs []model.Version) string {
	var s []string
	for _, v := range vs {
		switch {
		case v.Op < 0:
			s = append(s, "base")
		case v.Src == model.SrcZero:
			s = append(s, fmt.Sprintf("zeros of op %d", v.Op))
		default:
			s = append(s, fmt.Sprintf("op %d", v.Src))
		}
	}
	return strings.Join(s, ", ")
}

// durableBy names what made top op i durable before t: its own FUA, or the earliest top FLUSH
// (or PREFLUSH) submitted after i completed and completed before t.
func (c *Checker) durableBy(i int, t uint64) string {
	o := &c.th.Ops[i]
	if o.Flags&pclog.FlagFUA != 0 {
		return fmt.Sprintf("its own FUA (completed at %d)", o.Complete)
	}
	for k := range c.th.Ops {
		f := &c.th.Ops[k]
		if f.Complete >= t {
			break
		}
		if (f.Kind == pclog.KindFlush || f.Flags&pclog.FlagPreflush != 0) && f.Submit > o.Complete {
			return fmt.Sprintf("top FLUSH op %d (submitted at %d, acknowledged at %d)", k, f.Submit, f.Complete)
		}
	}
	return "the model"
}

func (c *Checker) detail(br *breach, t uint64) string {
	where := fmt.Sprintf("top sector %d (byte %d) holds", br.first, br.first*c.ss)
	if br.n > 1 {
		where = fmt.Sprintf("%d top sectors from sector %d (byte %d) hold", br.n, br.first, br.first*c.ss)
	}
	if br.op < 0 {
		return fmt.Sprintf("%s %s, which the top allows nowhere at crash point %d (allowed: %s)", where, br.shows, t, br.allows)
	}
	o := &c.th.Ops[br.op]
	return fmt.Sprintf("top %s op %d [%d,+%d) was durable, made so by %s, but the bottom state loses it: %s %s (allowed: %s)",
		o.Kind, br.op, o.Off, o.Len, c.durableBy(br.op, t), where, br.shows, br.allows)
}
