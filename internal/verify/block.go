package verify

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
)

// Block layout (little-endian), at the start of every written block:
//
//	0  u32 magic 0x42564350 ("PCVB")
//	4  u16 format version (1)
//	6  u16 block size in 512-byte units (so a block read with the wrong --bs is recognised)
//	8  u64 absolute byte offset of the block on the target
//	16 u64 run ID
//	24 u64 version: the block's write sequence number (1 for its first write, 2 for the next...)
//	32 u32 CRC32C of the whole block with this field zeroed
//	36 u32 reserved, zero
//	40 payload: wyrand stream seeded from (run ID, offset, version)
const (
	blockMagic    = 0x42564350
	formatVersion = 1
	// HeaderSize is the size of the block header.
	HeaderSize = 40
	crcOff     = 32
	// SectorSize is the granularity at which torn blocks are analysed.
	SectorSize = 512
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded block header.
type header struct {
	magic   uint32
	format  uint16
	sectors uint16
	offset  uint64
	runID   uint64
	version uint64
	crc     uint32
}

func parseHeader(b []byte) header {
	return header{
		magic:   binary.LittleEndian.Uint32(b[0:]),
		format:  binary.LittleEndian.Uint16(b[4:]),
		sectors: binary.LittleEndian.Uint16(b[6:]),
		offset:  binary.LittleEndian.Uint64(b[8:]),
		runID:   binary.LittleEndian.Uint64(b[16:]),
		version: binary.LittleEndian.Uint64(b[24:]),
		crc:     binary.LittleEndian.Uint32(b[crcOff:]),
	}
}

// ours reports whether the header looks like one we write (magic and format), whatever its run.
func (h header) ours() bool { return h.magic == blockMagic && h.format == formatVersion }

// blockCRC computes the CRC32C of b with the CRC field taken as zero.
func blockCRC(b []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:crcOff])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[crcOff+4:])
}

// intact reports whether b is a complete block of ours whose checksum matches.
func intact(b []byte) (header, bool) {
	h := parseHeader(b)
	if !h.ours() || int(h.sectors)*512 != len(b) {
		return h, false
	}
	return h, blockCRC(b) == h.crc
}

// seedFor mixes the identity of one block version into a PRNG state. Distinct inputs give
// unrelated streams (splitmix64 finaliser over each input in turn).
func seedFor(runID, offset, version uint64) uint64 {
	s := mix64(runID ^ 0x9e3779b97f4a7c15)
	s = mix64(s ^ offset)
	return mix64(s ^ version)
}

func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// fillPayload writes the wyrand stream for seed into p, 8 bytes at a time (len(p) % 8 == 0).
func fillPayload(p []byte, seed uint64) {
	s := seed
	for i := 0; i+8 <= len(p); i += 8 {
		s += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(s, s^0xe7037ed1a0b428db)
		binary.LittleEndian.PutUint64(p[i:], hi^lo)
	}
}

// makeBlock fills b (one whole block) with version v of the block at offset.
func makeBlock(b []byte, runID uint64, offset int64, v uint64) {
	binary.LittleEndian.PutUint32(b[0:], blockMagic)
	binary.LittleEndian.PutUint16(b[4:], formatVersion)
	binary.LittleEndian.PutUint16(b[6:], uint16(len(b)/512))
	binary.LittleEndian.PutUint64(b[8:], uint64(offset))
	binary.LittleEndian.PutUint64(b[16:], runID)
	binary.LittleEndian.PutUint64(b[24:], v)
	binary.LittleEndian.PutUint32(b[crcOff:], 0)
	binary.LittleEndian.PutUint32(b[36:], 0)
	fillPayload(b[HeaderSize:], seedFor(runID, uint64(offset), v))
	binary.LittleEndian.PutUint32(b[crcOff:], blockCRC(b))
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
