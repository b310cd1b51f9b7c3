package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Word is the tracking state of one block: 8 bytes per block, for both policies.
//
//	bits  0-29  L: the last version issued to the block (0: never written by this run family)
//	bits 30-31  kind of L: kindData, kindZeroes (WRITE_ZEROES) or kindTrim
//	bits 32-61  D: the newest version covered by a completed flush (0: none)
//	bit  62     Z: some version in [D, L) left zeros (a WRITE_ZEROES or TRIM)
//	bit  63     U: uncertain: the block may hold any version in [D, L] (a crash happened, or an
//	            operation on it failed, or the table was loaded under --policy flushed)
//
// Versions are per block and count every operation that changed the block (writes, zeroes and
// trims), so "version 3 of 7" means the block holds what its third operation wrote and four
// newer ones were issued. 30 bits allow about a billion operations per block.
type Word uint64

const (
	kindData   = 0
	kindZeroes = 1
	kindTrim   = 2

	versionBits = 30
	// MaxVersion is the highest version a block can reach.
	MaxVersion = 1<<versionBits - 1
	bitZ       = 1 << 62
	bitU       = 1 << 63
)

func (w Word) last() uint64    { return uint64(w) & MaxVersion }
func (w Word) kind() int       { return int(uint64(w)>>30) & 3 }
func (w Word) durable() uint64 { return uint64(w) >> 32 & MaxVersion }
func (w Word) zeroInWindow() bool {
	return uint64(w)&bitZ != 0
}
func (w Word) uncertain() bool { return uint64(w)&bitU != 0 }

func makeWord(last uint64, kind int, durable uint64, z, u bool) Word {
	w := last&MaxVersion | uint64(kind&3)<<30 | (durable&MaxVersion)<<32
	if z {
		w |= bitZ
	}
	if u {
		w |= bitU
	}
	return Word(w)
}

// advance returns the word after version v (of kind k) was issued; ok tells whether the
// operation completed (false: it failed or was in flight at a crash, so the block is uncertain).
func (w Word) advance(v uint64, k int, ok bool) Word {
	z := w.zeroInWindow() || (w.last() != 0 && w.kind() != kindData)
	return makeWord(v, k, w.durable(), z, !ok)
}

// flushed returns the word after a flush covered version v (of kind k).
func (w Word) flushed(v uint64, k int) Word {
	if v <= w.durable() {
		return w
	}
	z := w.zeroInWindow()
	if v == w.last() {
		z = false
	} else if k != kindData {
		z = true
	}
	// U stays: a flush makes durable whatever the block holds, which for an uncertain block is
	// still any version in [D, L].
	return makeWord(w.last(), w.kind(), v, z, w.uncertain())
}

// table is the in-memory tracking table: one atomic Word per block.
type table struct {
	w []atomic.Uint64
}

func newTable(n int64) *table { return &table{w: make([]atomic.Uint64, n)} }

func (t *table) get(i int64) Word    { return Word(t.w[i].Load()) }
func (t *table) set(i int64, w Word) { t.w[i].Store(uint64(w)) }
func (t *table) len() int64          { return int64(len(t.w)) }
func (t *table) update(i int64, f func(Word) Word) {
	for {
		old := t.w[i].Load()
		if t.w[i].CompareAndSwap(old, uint64(f(Word(old)))) {
			return
		}
	}
}

// Identity is what a track file describes: the region of the target the table belongs to and the
// run whose blocks it expects.
type Identity struct {
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
	Offset    int64  `json:"offset"`
	RunID     uint64 `json:"run_id"`
	// Target is informational (the path or URL of the last run).
	Target string `json:"target,omitempty"`
	// Crashed records that the run ended with a failed target: some blocks are uncertain.
	Crashed bool `json:"crashed,omitempty"`
}

// Track file layout: magic "PCVTRK01", u32 JSON length, JSON Identity, table words (u64 LE, one
// per block), u32 CRC32C of everything before it.
var trackMagic = []byte("PCVTRK01")

// ErrNoTrack is returned by loadTrack when the file does not exist.
var ErrNoTrack = errors.New("track file does not exist")

func saveTrack(path string, id Identity, t *table) error {
	js, err := json.Marshal(id)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.Grow(len(trackMagic) + 4 + len(js) + 8*int(t.len()) + 4)
	b.Write(trackMagic)
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(js))))
	b.Write(js)
	var w [8]byte
	for i := range t.w {
		binary.LittleEndian.PutUint64(w[:], t.w[i].Load())
		b.Write(w[:])
	}
	b.Write(binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b.Bytes(), castagnoli)))
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write track file %s: %w", path, err)
	}
	_, err = tmp.Write(b.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write track file %s: %w", path, err)
	}
	return nil
}

// loadTrack reads a track file. It does not delete it (the caller does, once the identity was
// accepted).
func loadTrack(path string) (Identity, *table, error) {
	var id Identity
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return id, nil, fmt.Errorf("%s: %w", path, ErrNoTrack)
	}
	if err != nil {
		return id, nil, fmt.Errorf("read track file: %w", err)
	}
	if len(b) < len(trackMagic)+8 || !bytes.Equal(b[:len(trackMagic)], trackMagic) {
		return id, nil, fmt.Errorf("track file %s: not a powercut verify track file", path)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return id, nil, fmt.Errorf("track file %s: checksum mismatch (%08x, file says %08x): the file is damaged", path, got, sum)
	}
	p := body[len(trackMagic):]
	n := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if n > len(p) {
		return id, nil, fmt.Errorf("track file %s: header length %d past the end", path, n)
	}
	if err := json.Unmarshal(p[:n], &id); err != nil {
		return id, nil, fmt.Errorf("track file %s: parse identity: %w", path, err)
	}
	p = p[n:]
	// The same constraints a run puts on --bs, --offset and --size: the identity is used without
	// further checks (block buffers of BlockSize bytes, Offset+Size arithmetic).
	bs := id.BlockSize
	if bs < 512 || bs%512 != 0 || bs/512 > 65535 || id.Size <= 0 || id.Size%bs != 0 ||
		id.Offset < 0 || id.Offset%bs != 0 || id.Offset > math.MaxInt64-id.Size {
		return id, nil, fmt.Errorf("track file %s: bad identity (size %d, block size %d, offset %d)", path, id.Size, id.BlockSize, id.Offset)
	}
	blocks := id.Size / bs
	// Compare without multiplying: 8*blocks can overflow.
	if int64(len(p))%8 != 0 || int64(len(p))/8 != blocks {
		return id, nil, fmt.Errorf("track file %s: %d bytes of table for %d blocks", path, len(p), blocks)
	}
	t := newTable(blocks)
	for i := range t.w {
		t.w[i].Store(binary.LittleEndian.Uint64(p[8*i:]))
	}
	return id, t, nil
}
