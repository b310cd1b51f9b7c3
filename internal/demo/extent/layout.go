package extent

import (
	"encoding/binary"
	"fmt"
)

// Slot names one of a block's two context slots. In memory, 0 is A and 1 is B; on disk the
// active-slot bitmap stores 1 for B.
type Slot uint8

const (
	SlotA Slot = 0
	SlotB Slot = 1
)

func (s Slot) String() string { return string(rune('A' + s)) }

// Other returns the block's other slot: the one a write goes to.
func (s Slot) Other() Slot { return 1 - s }

// Context is the content of one context slot: Crucible keeps the block context the client sent
// (here the client's hash of the block) and the hash of the bytes on disk. Without encryption
// both are the hash of the same bytes; they are kept apart because Crucible's recovery only ever
// compares the on-disk hash.
type Context struct {
	BlockHash  uint64
	OnDiskHash uint64
}

// Layout is where everything lives on the device, in bytes.
//
//	data     Blocks × BlockSize                   at 0
//	slots A  Blocks × SlotSize                    at SlotsOff
//	slots B  Blocks × SlotSize                    right after A
//	(zero padding to the next sector)
//	tail     padding | bitmap | metadata          TailOff .. Size
//
// The tail holds the active-slot bitmap immediately followed by the metadata, so that one write
// can store both (Crucible writes them together to clear the dirty flag "atomically"). The
// metadata starts a sector of its own and the bitmap ends right before it, so the tail always
// spans at least two sectors and the one "atomic" write is a multi-sector write, exactly as in
// Crucible's real extents, whose bitmaps are kilobytes long. That is what a torn write can split.
// The tail shares no sector with the slots, so a tail write never rewrites a context slot.
type Layout struct {
	Blocks     int64
	BlockSize  int64
	SectorSize int64
	SlotSize   int64
	SlotsOff   int64
	TailOff    int64 // first sector of the tail
	BitmapOff  int64
	BitmapLen  int64
	MetaOff    int64
	Size       int64 // device bytes the extent needs
}

// MetaLen is the encoded size of the metadata: dirty u8, 7 bytes padding, gen u64, flush u64,
// version u32, crc32c u32.
const MetaLen = 32

// NewLayout computes the layout of an extent of blocks blocks.
func NewLayout(blocks, blockSize, sectorSize, slotSize int64) (Layout, error) {
	if blocks <= 0 || blockSize <= 0 || sectorSize <= 0 || blockSize%sectorSize != 0 {
		return Layout{}, fmt.Errorf("extent layout: %d blocks of %d bytes on %d-byte sectors: want positive sizes, blocks a multiple of sectors", blocks, blockSize, sectorSize)
	}
	if slotSize < slotEncLen {
		return Layout{}, fmt.Errorf("extent layout: slot size %d below the %d encoded bytes", slotSize, slotEncLen)
	}
	l := Layout{Blocks: blocks, BlockSize: blockSize, SectorSize: sectorSize, SlotSize: slotSize}
	l.SlotsOff = blocks * blockSize
	l.TailOff = roundUp(l.SlotsOff+2*blocks*slotSize, sectorSize)
	l.BitmapLen = (blocks + 7) / 8
	l.MetaOff = l.TailOff + roundUp(l.BitmapLen, sectorSize)
	l.BitmapOff = l.MetaOff - l.BitmapLen
	l.Size = l.MetaOff + sectorSize
	return l, nil
}

func roundUp(x, a int64) int64   { return (x + a - 1) / a * a }
func roundDown(x, a int64) int64 { return x / a * a }

// SlotOff is the byte offset of block b's slot s.
func (l Layout) SlotOff(b int64, s Slot) int64 {
	return l.SlotsOff + (int64(s)*l.Blocks+b)*l.SlotSize
}

// BlockOff is the byte offset of block b's data.
func (l Layout) BlockOff(b int64) int64 { return b * l.BlockSize }

// TailLen is the length of the tail write (bitmap sectors and the metadata sector).
func (l Layout) TailLen() int64 { return l.Size - l.TailOff }

// slotEncLen: tag u8 (0 empty, 1 present, as bincode's Option), block hash u64, on-disk hash u64.
const slotEncLen = 17

func encodeSlot(p []byte, c *Context) {
	clear(p)
	if c == nil {
		return
	}
	p[0] = 1
	binary.LittleEndian.PutUint64(p[1:], c.BlockHash)
	binary.LittleEndian.PutUint64(p[9:], c.OnDiskHash)
}

// decodeSlot returns nil for an empty slot and an error for a tag that is neither.
func decodeSlot(p []byte) (*Context, error) {
	switch p[0] {
	case 0:
		return nil, nil
	case 1:
		return &Context{BlockHash: binary.LittleEndian.Uint64(p[1:]), OnDiskHash: binary.LittleEndian.Uint64(p[9:])}, nil
	}
	return nil, fmt.Errorf("context slot tag %#x is neither empty (0) nor present (1)", p[0])
}

// Meta is the extent's metadata.
type Meta struct {
	Dirty   bool
	Gen     uint64
	Flush   uint64
	Version uint32
	CRC     uint32
}

func encodeMeta(p []byte, m *Meta) {
	clear(p[:MetaLen])
	if m.Dirty {
		p[0] = 1
	}
	binary.LittleEndian.PutUint64(p[8:], m.Gen)
	binary.LittleEndian.PutUint64(p[16:], m.Flush)
	binary.LittleEndian.PutUint32(p[24:], m.Version)
	binary.LittleEndian.PutUint32(p[28:], m.CRC)
}

func decodeMeta(p []byte) (Meta, error) {
	m := Meta{Gen: binary.LittleEndian.Uint64(p[8:]), Flush: binary.LittleEndian.Uint64(p[16:]),
		Version: binary.LittleEndian.Uint32(p[24:]), CRC: binary.LittleEndian.Uint32(p[28:])}
	switch p[0] {
	case 0:
	case 1:
		m.Dirty = true
	default:
		return m, fmt.Errorf("metadata dirty byte %#x is neither 0 nor 1", p[0])
	}
	return m, nil
}
