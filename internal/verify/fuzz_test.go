package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// trackBytes builds the bytes of a track file for id and the given table words.
func trackBytes(t testing.TB, id Identity, words ...uint64) []byte {
	js, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), trackMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(js)))
	b = append(b, js...)
	for _, w := range words {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// FuzzLoadTrack feeds arbitrary bytes to the track file reader. The second argument makes the
// fuzzer's life easier: when set, the trailing checksum is recomputed over the input so that
// mutations reach the identity and table decoding instead of stopping at the CRC.
func FuzzLoadTrack(f *testing.F) {
	id := Identity{Size: 4 * 4096, BlockSize: 4096, Offset: 8192, RunID: 0x1234, Target: "/dev/x"}
	f.Add(trackBytes(f, id, 0, uint64(makeWord(3, kindData, 2, false, false)), uint64(makeWord(1, kindTrim, 0, true, true)), 1<<63), false)
	f.Add(trackBytes(f, Identity{Size: 512, BlockSize: 512, RunID: 1, Crashed: true}, 0), false)
	f.Add(trackBytes(f, Identity{Size: 512, BlockSize: 512}, 0), true)
	// 2^61+1 blocks of one byte: 8*blocks wraps to 8.
	f.Add(trackBytes(f, Identity{Size: 1<<61 + 1, BlockSize: 1}, 0), true)
	f.Add([]byte("PCVTRK01"), true)
	f.Add([]byte{}, false)

	dir := f.TempDir()
	path := filepath.Join(dir, "track")
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if fixCRC && len(b) >= 4 {
			b = bytes.Clone(b)
			binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		id, tab, err := loadTrack(path)
		if err != nil {
			if tab != nil {
				t.Fatalf("error %v with a table", err)
			}
			return
		}
		// A table the rest of the package can use without further checks: the identity
		// satisfies the same constraints a run puts on --bs/--offset/--size, and the table
		// holds exactly one word per block (so its size is bounded by the file's).
		bs := id.BlockSize
		if bs < 512 || bs%512 != 0 || bs/512 > 65535 {
			t.Fatalf("accepted block size %d", bs)
		}
		if id.Size <= 0 || id.Size%bs != 0 || id.Offset < 0 || id.Offset%bs != 0 || id.Offset+id.Size < id.Offset {
			t.Fatalf("accepted region size %d offset %d (block size %d)", id.Size, id.Offset, bs)
		}
		if tab == nil || tab.len() != id.Size/bs || 8*tab.len() > int64(len(b)) {
			t.Fatalf("table for %d blocks from %d bytes (identity %+v)", tab.len(), len(b), id)
		}
		// What a run or the explore checker then does with the table: classify a block of
		// every word, and round-trip the file.
		c := checker{runID: id.RunID, bs: bs}
		blk := make([]byte, bs)
		for i := int64(0); i < tab.len() && i < 4; i++ {
			c.check(blk, id.Offset+i*bs, tab.get(i))
		}
		if err := saveTrack(path, id, tab); err != nil {
			t.Fatal(err)
		}
		id2, tab2, err := loadTrack(path)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		if id2 != id || tab2.len() != tab.len() {
			t.Fatalf("round trip: %+v -> %+v", id, id2)
		}
		for i := int64(0); i < tab.len(); i++ {
			if tab.get(i) != tab2.get(i) {
				t.Fatalf("round trip: word %d %x -> %x", i, tab.get(i), tab2.get(i))
			}
		}
	})
}

// FuzzCheck feeds arbitrary block contents and tracking words (as a loaded track file may
// hold any word) to the classifier. It must never panic, must accept the block a word
// expects, and every failure must name a known class.
func FuzzCheck(f *testing.F) {
	const runID = 0xfeedface
	blk := func(sectors int, off int64, v uint64) []byte {
		b := make([]byte, sectors*512)
		makeBlock(b, runID, off, v)
		return b
	}
	torn := blk(8, 4096, 3)
	copy(torn[2048:], blk(8, 4096, 2)[2048:])
	damaged := blk(8, 4096, 5)
	damaged[100] ^= 1
	f.Add(blk(8, 4096, 3), uint64(makeWord(3, kindData, 3, false, false)), uint8(0), false)
	f.Add(blk(8, 4096, 2), uint64(makeWord(3, kindData, 1, false, true)), uint8(0), false)
	f.Add(blk(8, 8192, 3), uint64(makeWord(3, kindData, 3, false, false)), uint8(0), false)
	f.Add(torn, uint64(makeWord(3, kindData, 1, false, true)), uint8(0), false)
	f.Add(damaged, uint64(makeWord(5, kindZeroes, 4, true, false)), uint8(0), true)
	f.Add(blk(1, 4096, 7), uint64(makeWord(9, kindTrim, 0, false, false)), uint8(0), false)
	f.Add(make([]byte, 4096), uint64(makeWord(2, kindZeroes, 2, false, false)), uint8(0), false)
	f.Add(blk(8, 4096, 4), uint64(makeWord(2, kindZeroes, 2, false, false)), uint8(1), false)
	f.Add([]byte{0x50, 0x43, 0x56, 0x42, 1, 0, 8, 0}, ^uint64(0), uint8(3), true)

	dumps := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, word uint64, offSel uint8, trimZeroes bool) {
		// A read block is always a whole block of a valid --bs (a multiple of 512): pad or
		// cut the input to the next multiple of 512, at most 16 sectors.
		n := min(max((len(b)+511)/512, 1), 16) * 512
		got := make([]byte, n)
		copy(got, b)
		off := int64(offSel) * int64(n)
		w := Word(word)
		c := checker{runID: runID, bs: int64(n), trimZeroes: trimZeroes}
		class, detail := c.check(got, off, w)
		switch class {
		case "":
			if detail != "" {
				t.Fatalf("accepted with detail %q", detail)
			}
		case ClassStale, ClassMisdirected, ClassTorn, ClassCorrupt, ClassLostZeroes:
			if detail == "" {
				t.Fatalf("class %s without detail", class)
			}
		default:
			t.Fatalf("unknown class %q (%s)", class, detail)
		}
		// The newest expected content is always acceptable.
		e := expectFor(w, trimZeroes)
		if exp := c.expectedImage(off, w); e.lo <= e.hi || e.zeros {
			if cl, d := c.check(exp, off, w); cl != "" {
				t.Fatalf("expected image of word %x refused: %s", word, d)
			}
		}
		// The dump path decodes the same header (only for some offsets: it writes files).
		if class != "" && offSel == 1 {
			if _, err := c.dump(dumps, "b", off, got, w, class, detail); err != nil {
				t.Fatal(err)
			}
		}
	})
}
