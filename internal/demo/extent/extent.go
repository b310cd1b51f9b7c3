// Package extent is a raw extent file in the design of Oxide Crucible's raw backend
// (downstairs/src/extent_inner_raw.rs, PR #991 and its follow-ups), written for powercut's demo:
// a real storage design from the field whose crash consistency powercut can check.
//
// An extent is N blocks of data, two context slots per block (A and B, each holding the block's
// hashes, XXH64 seed 0; an empty slot means "never written"), an active-slot bitmap and a small
// metadata record {dirty, gen, flush number, version}. See Layout for the byte layout.
//
// # Protocol
//
// A write sets the dirty flag, writes the new context into the block's inactive slot, then the
// data, then flips the block's active slot in memory. The slot that still describes the old data
// is never touched by the write, so after a crash one of the two slots matches whatever data is
// on disk, old or new. A flush writes the bitmap and the metadata (dirty = 0, the new flush
// number) and syncs. Opening a clean extent trusts the bitmap; opening a dirty one re-derives
// each block's active slot by hashing the data against both slots (a matching slot wins, else an
// empty one, else the open fails). After a flush, when the active slots are scattered over both
// arrays, the extent defragments them by copying the minority's contexts into the other array.
//
// The device is a block device: WRITE and FLUSH (pwrite and fsync of the original). Everything
// smaller than a sector is a read-modify-write of whole sectors.
//
// # Profiles
//
// Crucible (ProfileCrucible) ships the protocol above and relies on writes reaching the disk in
// the order they were issued, whole (its maintainers say so in PR #1798: ZFS gives that
// guarantee). Like Crucible after PR #1798 it syncs after setting the dirty flag (so a later
// clean-metadata write cannot be persisted in its place) and syncs before rewriting a block whose
// previous write has not been synced. It survives the prefix and flush models and fails reorder.
//
// Hardened (ProfileHardened) drops the ordering assumption: it flushes after writing a context
// and before writing the data (a context is durable before the data it describes), flushes before
// writing the clean metadata (the data is durable before the bitmap that points at it), protects
// bitmap + metadata with a CRC32C (a bad CRC means a torn tail: open it as dirty), and pads slots
// to 64 bytes so no slot straddles a sector. It survives prefix, flush, reorder and torn.
//
// # Planted bugs
//
// Each Bug disables one safeguard; each is a real code path taken only when selected:
// P1 skips the sync after setting dirty, P2 skips the bonus sync before rewriting an unsynced
// block, P3 writes the clean metadata before the data is durable (hardened's pre-flush), P4
// trusts a bitmap + metadata written in one multi-sector write (no CRC check), P5 acknowledges a
// flush without flushing the device.
package extent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Device is the block device an extent lives on. *record.Device satisfies it; so does
// StoreDevice for a scratch copy-on-write layer.
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Size() int64
}

// Profile selects the protocol variant.
type Profile uint8

const (
	ProfileCrucible Profile = iota + 1
	ProfileHardened
)

func (p Profile) String() string {
	switch p {
	case ProfileCrucible:
		return "crucible"
	case ProfileHardened:
		return "hardened"
	}
	return fmt.Sprintf("profile(%d)", uint8(p))
}

// ParseProfile parses "crucible" or "hardened".
func ParseProfile(s string) (Profile, error) {
	switch strings.ToLower(s) {
	case "crucible":
		return ProfileCrucible, nil
	case "hardened":
		return ProfileHardened, nil
	}
	return 0, fmt.Errorf("unknown profile %q (want crucible or hardened)", s)
}

// Bug selects a planted bug (BugNone: none).
type Bug uint8

const (
	BugNone Bug = iota
	// BugP1 skips the sync after setting the dirty flag.
	BugP1
	// BugP2 skips the bonus sync before a write to a block whose last write is not synced yet.
	BugP2
	// BugP3 clears the dirty flag before the data is durable (no flush before the clean
	// metadata; hardened only, Crucible ships without that flush).
	BugP3
	// BugP4 trusts the bitmap + metadata written by one multi-sector write: the CRC is not
	// checked (hardened only, Crucible has no CRC).
	BugP4
	// BugP5 acknowledges a flush without issuing a device FLUSH.
	BugP5
)

// Bugs lists the planted bugs.
func Bugs() []Bug { return []Bug{BugP1, BugP2, BugP3, BugP4, BugP5} }

func (b Bug) String() string {
	if b == BugNone {
		return "none"
	}
	return fmt.Sprintf("P%d", uint8(b))
}

// Describe says in words what the bug does.
func (b Bug) Describe() string {
	switch b {
	case BugNone:
		return "no planted bug"
	case BugP1:
		return "skip the sync after setting the dirty flag"
	case BugP2:
		return "no bonus sync before rewriting a block whose last write is not synced"
	case BugP3:
		return "clear the dirty flag before the data is durable"
	case BugP4:
		return "trust bitmap + metadata written in one multi-sector write (no CRC check)"
	case BugP5:
		return "acknowledge a flush without flushing the device"
	}
	return "unknown bug"
}

// ParseBug parses "P1".."P5" (case-insensitive), "" or "none".
func ParseBug(s string) (Bug, error) {
	switch strings.ToUpper(s) {
	case "", "NONE":
		return BugNone, nil
	}
	for _, b := range Bugs() {
		if strings.EqualFold(s, b.String()) {
			return b, nil
		}
	}
	return 0, fmt.Errorf("unknown bug %q (want P1, P2, P3, P4 or P5)", s)
}

// Applies reports whether the bug's code path exists in profile p.
func (b Bug) Applies(p Profile) bool {
	switch b {
	case BugP3, BugP4:
		return p == ProfileHardened
	}
	return true
}

// Options configure an extent.
type Options struct {
	Profile   Profile
	Bug       Bug
	Blocks    int64
	BlockSize int64 // default 512
	// SectorSize is the device's logical sector size (default 512).
	SectorSize int64
}

func (o Options) withDefaults() Options {
	if o.Profile == 0 {
		o.Profile = ProfileHardened
	}
	if o.BlockSize == 0 {
		o.BlockSize = 512
	}
	if o.SectorSize == 0 {
		o.SectorSize = 512
	}
	return o
}

// Layout returns the layout the options give.
func (o Options) Layout() (Layout, error) {
	o = o.withDefaults()
	slot := int64(48) // Crucible's BLOCK_CONTEXT_SLOT_SIZE_BYTES: slots pack across sectors
	if o.Profile == ProfileHardened {
		slot = 64 // a power of two dividing the sector: no slot straddles one
	}
	return NewLayout(o.Blocks, o.BlockSize, o.SectorSize, slot)
}

// version is the metadata's extent version, one per profile (their layouts differ).
func (o Options) version() uint32 { return 0x50430000 | uint32(o.Profile) }

// DefragThreshold: defragment after a flush when the active slots switch between A and B more
// than this many times along the extent (Crucible counts the extra syscalls such switches cost).
const DefragThreshold = 3

// MissingSlotError is the open failure of Crucible's MissingContextSlot: a dirty extent's block
// matches neither slot and neither slot is empty.
type MissingSlotError struct{ Block int64 }

func (e *MissingSlotError) Error() string {
	return fmt.Sprintf("block %d: data matches neither context slot and no slot is empty", e.Block)
}

// ErrNotFormatted: the metadata is all zeros, the extent was never created (or its creation
// never reached the disk).
var ErrNotFormatted = errors.New("no extent here: the metadata is all zeros")

// Stats count what the extent did.
type Stats struct {
	Writes, Flushes, Syncs, BonusSyncs, Defrags int
}

// Extent is an open extent.
type Extent struct {
	dev Device
	opt Options
	lay Layout

	active []Slot
	dirty  bool
	flush  uint64
	gen    uint64
	// unsynced[b]: block b's data or slots changed on the device since the last device flush.
	// Writing b again before a sync could leave the slot that describes b's durable data
	// overwritten while that data is still what the disk holds; the bonus sync prevents it.
	unsynced []bool

	// OpenedClean: the open trusted the bitmap (metadata clean, CRC fine).
	OpenedClean bool
	// TornTail: the open found a bad CRC over bitmap + metadata and treated the extent as dirty.
	TornTail bool
	Stats    Stats
}

// Hash is the integrity hash: XXH64 with seed 0.
func Hash(p []byte) uint64 { return xxhash.Sum64(p) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newExtent(dev Device, opt Options) (*Extent, error) {
	opt = opt.withDefaults()
	lay, err := opt.Layout()
	if err != nil {
		return nil, err
	}
	if dev.Size() < lay.Size {
		return nil, fmt.Errorf("extent of %d blocks needs %d bytes, device has %d", lay.Blocks, lay.Size, dev.Size())
	}
	return &Extent{dev: dev, opt: opt, lay: lay, active: make([]Slot, lay.Blocks), unsynced: make([]bool, lay.Blocks)}, nil
}

// Create formats a new extent on dev (which must read as zeros): every slot empty, clean
// metadata with flush number 0, then a sync.
func Create(dev Device, opt Options) (*Extent, error) {
	e, err := newExtent(dev, opt)
	if err != nil {
		return nil, err
	}
	if err := e.writeTail(false); err != nil {
		return nil, fmt.Errorf("create extent: %w", err)
	}
	if err := e.sync(); err != nil {
		return nil, fmt.Errorf("create extent: %w", err)
	}
	return e, nil
}

// Open opens the extent on dev. When sync is set it first syncs the device, as Crucible does
// when it opens an extent read-write (the rest of the protocol may then assume that nothing
// written before the open is in flight).
func Open(dev Device, opt Options, sync bool) (*Extent, error) {
	e, err := newExtent(dev, opt)
	if err != nil {
		return nil, err
	}
	if sync {
		if err := e.sync(); err != nil {
			return nil, fmt.Errorf("open extent: %w", err)
		}
	}
	tail := make([]byte, e.lay.TailLen())
	if err := e.read(tail, e.lay.TailOff); err != nil {
		return nil, fmt.Errorf("open extent: read bitmap and metadata: %w", err)
	}
	bitmap := tail[e.lay.BitmapOff-e.lay.TailOff : e.lay.MetaOff-e.lay.TailOff]
	mb := tail[e.lay.MetaOff-e.lay.TailOff:]
	meta, err := decodeMeta(mb)
	if err != nil {
		return nil, fmt.Errorf("open extent: %w", err)
	}
	if meta == (Meta{}) {
		return nil, fmt.Errorf("open extent: %w", ErrNotFormatted)
	}
	if meta.Version != e.opt.version() {
		return nil, fmt.Errorf("open extent: metadata version %#x, want %#x (%s profile)", meta.Version, e.opt.version(), e.opt.Profile)
	}
	e.flush, e.gen, e.dirty = meta.Flush, meta.Gen, meta.Dirty
	if e.opt.Profile == ProfileHardened && e.opt.Bug != BugP4 {
		// The tail is written by one multi-sector write that a power cut can tear; the CRC
		// tells whether bitmap and metadata come from the same write. If not, the bitmap cannot
		// be trusted: fall back to the dirty path, which needs only the slots and the data.
		if crcOf(bitmap, mb) != meta.CRC {
			e.TornTail = true
			e.dirty = true
		}
	}
	if !e.dirty {
		for b := range e.active {
			e.active[b] = Slot(bitmap[b/8] >> (b % 8) & 1)
		}
		e.OpenedClean = true
		return e, nil
	}
	if err := e.rederive(); err != nil {
		return nil, fmt.Errorf("open extent: %w", err)
	}
	return e, nil
}

// rederive recomputes every block's active slot from the data (the dirty open).
func (e *Extent) rederive() error {
	slots, err := e.readSlots()
	if err != nil {
		return err
	}
	buf := make([]byte, e.lay.BlockSize)
	for b := range e.active {
		a, bb := slots[0][b], slots[1][b]
		if a == nil && bb == nil {
			// Never written: Crucible skips hashing, the block must read as zeros.
			e.active[b] = SlotA
			continue
		}
		if err := e.read(buf, e.lay.BlockOff(int64(b))); err != nil {
			return fmt.Errorf("read block %d: %w", b, err)
		}
		h := Hash(buf)
		match, empty := -1, -1
		for s, c := range []*Context{a, bb} {
			if c != nil && c.OnDiskHash == h {
				match = s
			} else if c == nil && empty < 0 {
				empty = s
			}
		}
		switch {
		case match >= 0:
			e.active[b] = Slot(match)
		case empty >= 0:
			e.active[b] = Slot(empty)
		default:
			return &MissingSlotError{Block: int64(b)}
		}
	}
	return nil
}

// readSlots reads both slot arrays.
func (e *Extent) readSlots() ([2][]*Context, error) {
	var out [2][]*Context
	buf := make([]byte, e.lay.Blocks*e.lay.SlotSize)
	for s := SlotA; s <= SlotB; s++ {
		if err := e.read(buf, e.lay.SlotOff(0, s)); err != nil {
			return out, fmt.Errorf("read context slots %s: %w", s, err)
		}
		out[s] = make([]*Context, e.lay.Blocks)
		for b := range out[s] {
			c, err := decodeSlot(buf[int64(b)*e.lay.SlotSize:])
			if err != nil {
				return out, fmt.Errorf("block %d slot %s: %w", b, s, err)
			}
			out[s][b] = c
		}
	}
	return out, nil
}

func crcOf(bitmap, meta []byte) uint32 {
	c := crc32.Update(0, castagnoli, bitmap)
	return crc32.Update(c, castagnoli, meta[:28])
}

func (e *Extent) read(p []byte, off int64) error {
	n, err := e.dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("short read %d of %d bytes", n, len(p))
	}
	return fmt.Errorf("read [%d,+%d): %w", off, len(p), err)
}

// patch writes p at off as a read-modify-write of the whole sectors around it: one WRITE.
func (e *Extent) patch(p []byte, off int64) error {
	ss := e.lay.SectorSize
	start, end := roundDown(off, ss), roundUp(off+int64(len(p)), ss)
	buf := make([]byte, end-start)
	if err := e.read(buf, start); err != nil {
		return err
	}
	copy(buf[off-start:], p)
	return e.dev.WriteAt(buf, start, false)
}

func (e *Extent) sync() error {
	if err := e.dev.Flush(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	clear(e.unsynced)
	e.Stats.Syncs++
	return nil
}

// writeTail writes the active-slot bitmap and the metadata in one write.
func (e *Extent) writeTail(dirty bool) error {
	tail := make([]byte, e.lay.TailLen())
	bitmap := tail[e.lay.BitmapOff-e.lay.TailOff : e.lay.MetaOff-e.lay.TailOff]
	for b, s := range e.active {
		bitmap[b/8] |= byte(s) << (b % 8)
	}
	mb := tail[e.lay.MetaOff-e.lay.TailOff:]
	m := Meta{Dirty: dirty, Gen: e.gen, Flush: e.flush, Version: e.opt.version()}
	encodeMeta(mb, &m)
	if e.opt.Profile == ProfileHardened {
		binary.LittleEndian.PutUint32(mb[28:], crcOf(bitmap, mb))
	}
	if err := e.dev.WriteAt(tail, e.lay.TailOff, false); err != nil {
		return fmt.Errorf("write bitmap and metadata: %w", err)
	}
	return nil
}

// Blocks is the number of blocks.
func (e *Extent) Blocks() int64 { return e.lay.Blocks }

// BlockSize is the block size in bytes.
func (e *Extent) BlockSize() int64 { return e.lay.BlockSize }

// Dirty reports the in-memory dirty flag.
func (e *Extent) Dirty() bool { return e.dirty }

// FlushNumber is the flush number of the last flush.
func (e *Extent) FlushNumber() uint64 { return e.flush }

// Active returns block b's active slot.
func (e *Extent) Active(b int64) Slot { return e.active[b] }

// Write writes one block.
func (e *Extent) Write(b int64, data []byte) error {
	if b < 0 || b >= e.lay.Blocks || int64(len(data)) != e.lay.BlockSize {
		return fmt.Errorf("write block %d with %d bytes: extent has %d blocks of %d bytes", b, len(data), e.lay.Blocks, e.lay.BlockSize)
	}
	if !e.dirty {
		// The dirty flag goes first: if the process dies after this point, the next open rehashes
		// instead of trusting a bitmap that no longer describes the data.
		if err := e.writeTail(true); err != nil {
			return fmt.Errorf("write block %d: set dirty: %w", b, err)
		}
		e.dirty = true
		if e.opt.Bug != BugP1 {
			// Sync the flag now: on a file system that may persist an earlier write with the
			// content of a later one to the same place (ZFS, Crucible PR #1798), the flush's
			// clean tail could otherwise stand in for this dirty write before the data lands.
			if err := e.sync(); err != nil {
				return fmt.Errorf("write block %d: sync after setting dirty: %w", b, err)
			}
		}
	}
	if e.unsynced[b] && e.opt.Bug != BugP2 {
		// The slot about to be overwritten describes data that may be the disk's only durable
		// copy until the last write to this block is synced: make that write durable first.
		if err := e.sync(); err != nil {
			return fmt.Errorf("write block %d: bonus sync: %w", b, err)
		}
		e.Stats.BonusSyncs++
	}
	slot := e.active[b].Other()
	h := Hash(data)
	ctx := make([]byte, e.lay.SlotSize)
	encodeSlot(ctx, &Context{BlockHash: h, OnDiskHash: h})
	if err := e.patch(ctx, e.lay.SlotOff(b, slot)); err != nil {
		return fmt.Errorf("write block %d: context slot %s: %w", b, slot, err)
	}
	e.unsynced[b] = true
	if e.opt.Profile == ProfileHardened {
		// The context must be on media before the data it describes can be.
		if err := e.sync(); err != nil {
			return fmt.Errorf("write block %d: sync context: %w", b, err)
		}
	}
	if err := e.dev.WriteAt(data, e.lay.BlockOff(b), false); err != nil {
		return fmt.Errorf("write block %d: data: %w", b, err)
	}
	e.unsynced[b] = true
	e.active[b] = slot
	e.Stats.Writes++
	return nil
}

// Flush makes every write so far durable and records flush number n: bitmap + metadata with
// dirty = 0, then a sync. A clean extent has nothing to flush and keeps its flush number, as in
// Crucible. When the active slots are fragmented it then defragments them.
func (e *Extent) Flush(n uint64) error {
	if !e.dirty {
		return nil
	}
	if e.opt.Profile == ProfileHardened && e.opt.Bug != BugP3 {
		// Data first: a clean bitmap must never point at a context whose data is not durable.
		if err := e.sync(); err != nil {
			return fmt.Errorf("flush %d: sync data: %w", n, err)
		}
	}
	old := e.flush
	e.flush = n
	if err := e.writeTail(false); err != nil {
		e.flush = old
		return fmt.Errorf("flush %d: %w", n, err)
	}
	if e.opt.Bug != BugP5 {
		if err := e.sync(); err != nil {
			return fmt.Errorf("flush %d: %w", n, err)
		}
	}
	e.dirty = false
	e.Stats.Flushes++
	if e.fragmentation() > DefragThreshold {
		if err := e.defragment(); err != nil {
			return fmt.Errorf("flush %d: defragment: %w", n, err)
		}
	}
	return nil
}

// fragmentation counts the A/B switches along the extent.
func (e *Extent) fragmentation() int {
	n := 0
	for b := 1; b < len(e.active); b++ {
		if e.active[b] != e.active[b-1] {
			n++
		}
	}
	return n
}

// defragment copies the contexts of the blocks active in the less popular array into the
// other array, over the range those blocks cover, in one write, and makes the other array
// active for them. It runs right after a flush: the data is durable and matches the active
// slots, so overwriting the inactive slots with the same context is safe, and the bitmap on
// disk stays valid either way (both slots now match). The copied blocks count as unsynced, so a
// write to one of them syncs first and the copy cannot be lost under the slot it replaces.
func (e *Extent) defragment() error {
	var cnt [2]int
	lo, hi := [2]int64{-1, -1}, [2]int64{}
	for b, s := range e.active {
		cnt[s]++
		if lo[s] < 0 {
			lo[s] = int64(b)
		}
		hi[s] = int64(b)
	}
	if cnt[0] == 0 || cnt[1] == 0 {
		return nil
	}
	from := SlotA
	if cnt[1] < cnt[0] {
		from = SlotB
	}
	to := from.Other()
	first, last := lo[from], hi[from]
	n := last - first + 1
	src := make([]byte, n*e.lay.SlotSize)
	dst := make([]byte, n*e.lay.SlotSize)
	if err := e.read(src, e.lay.SlotOff(first, from)); err != nil {
		return err
	}
	if err := e.read(dst, e.lay.SlotOff(first, to)); err != nil {
		return err
	}
	for i := int64(0); i < n; i++ {
		if e.active[first+i] == from {
			copy(dst[i*e.lay.SlotSize:(i+1)*e.lay.SlotSize], src[i*e.lay.SlotSize:(i+1)*e.lay.SlotSize])
		}
	}
	if err := e.patch(dst, e.lay.SlotOff(first, to)); err != nil {
		return err
	}
	for i := int64(0); i < n; i++ {
		if e.active[first+i] == from {
			e.active[first+i] = to
			e.unsynced[first+i] = true
		}
	}
	e.Stats.Defrags++
	return nil
}

// Context reads block b's slot s (nil: empty).
func (e *Extent) Context(b int64, s Slot) (*Context, error) {
	buf := make([]byte, e.lay.SlotSize)
	if err := e.read(buf, e.lay.SlotOff(b, s)); err != nil {
		return nil, fmt.Errorf("read block %d slot %s: %w", b, s, err)
	}
	c, err := decodeSlot(buf)
	if err != nil {
		return nil, fmt.Errorf("block %d slot %s: %w", b, s, err)
	}
	return c, nil
}

// Read reads block b's data.
func (e *Extent) Read(b int64) ([]byte, error) {
	buf := make([]byte, e.lay.BlockSize)
	if err := e.read(buf, e.lay.BlockOff(b)); err != nil {
		return nil, fmt.Errorf("read block %d: %w", b, err)
	}
	return buf, nil
}

// Problem is a structural inconsistency found by Validate.
type Problem struct {
	Block  int64
	Detail string
}

// Validate checks every block's active slot against its data: the slot's on-disk hash must
// match the data, or the slot must be empty and the data all zeros. For an extent opened clean
// this checks that the trusted bitmap is correct.
func (e *Extent) Validate() ([]Problem, error) {
	slots, err := e.readSlots()
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	what := "active slot"
	if e.OpenedClean {
		what = "clean bitmap's slot"
	}
	var out []Problem
	for b := range e.active {
		data, err := e.Read(int64(b))
		if err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
		s := e.active[b]
		c := slots[s][b]
		switch {
		case c == nil && !allZero(data):
			out = append(out, Problem{int64(b), fmt.Sprintf("%s %s is empty but the block holds data", what, s)})
		case c != nil && c.OnDiskHash != Hash(data):
			out = append(out, Problem{int64(b), fmt.Sprintf("%s %s has hash %016x, the data hashes to %016x", what, s, c.OnDiskHash, Hash(data))})
		}
	}
	return out, nil
}

func allZero(p []byte) bool {
	var z [512]byte
	for len(p) > 0 {
		n := min(len(p), len(z))
		if !bytes.Equal(p[:n], z[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// IsMissingSlot reports whether err is a MissingSlotError and returns the block.
func IsMissingSlot(err error) (int64, bool) {
	var m *MissingSlotError
	if errors.As(err, &m) {
		return m.Block, true
	}
	return -1, false
}
