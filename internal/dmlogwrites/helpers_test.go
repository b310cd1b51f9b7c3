package dmlogwrites

import (
	"bytes"
	"encoding/binary"
	"github.com/powercut/powercut/internal/testenv"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// tEntry is one entry of a synthetic log, encoded by buildLog independently of the package's
// own encoder (Export), so that a bug shared by reader and writer cannot hide.
type tEntry struct {
	sector, nr, flags, dataLen uint64
	mark                       string
	data                       []byte // payload; nil: nr*ss pattern bytes for a write
}

func w(sector, nr, flags uint64) tEntry { return tEntry{sector: sector, nr: nr, flags: flags} }
func mk(name string) tEntry {
	return tEntry{flags: FlagMark, dataLen: uint64(len(name)), mark: name}
}

// pattern is the deterministic payload of entry i.
func pattern(i int, n int) []byte {
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*31 + j*7 + j>>9)
	}
	return p
}

// buildLog encodes a dm-log-writes log: superblock (with garbage in bytes 28-31), then entries.
func buildLog(ss int, nrEntries uint64, entries []tEntry) []byte {
	var b bytes.Buffer
	sb := make([]byte, ss)
	binary.LittleEndian.PutUint64(sb[0:], 0x6a736677736872)
	binary.LittleEndian.PutUint64(sb[8:], 1)
	binary.LittleEndian.PutUint64(sb[16:], nrEntries)
	binary.LittleEndian.PutUint32(sb[24:], uint32(ss))
	copy(sb[28:], []byte{0xde, 0xad, 0xbe, 0xef})
	b.Write(sb)
	for i, e := range entries {
		h := make([]byte, ss)
		binary.LittleEndian.PutUint64(h[0:], e.sector)
		binary.LittleEndian.PutUint64(h[8:], e.nr)
		binary.LittleEndian.PutUint64(h[16:], e.flags)
		binary.LittleEndian.PutUint64(h[24:], e.dataLen)
		copy(h[32:], e.mark)
		b.Write(h)
		if e.flags&(FlagMark|FlagDiscard) == 0 && e.nr > 0 {
			if e.data != nil {
				b.Write(e.data)
			} else {
				b.Write(pattern(i, int(e.nr)*ss))
			}
		}
	}
	return b.Bytes()
}

// sampleEntries is a small log using every entry type the kernel writes, in sector units.
func sampleEntries() []tEntry {
	return []tEntry{
		mk("mount"),
		w(8, 2, 0),
		w(16, 1, FlagMetadata),
		w(0, 1, FlagFUA),
		w(0, 0, FlagFlush),
		w(24, 0, FlagFlush|FlagFUA|FlagMetadata),
		w(24, 1, FlagFUA|FlagMetadata),
		w(32, 3, FlagFlush|FlagFUA),
		w(40, 100, FlagDiscard),
		mk("fsync-1"),
		w(8, 2, FlagMetadata),
		w(0, 0, FlagFlush|FlagFUA),
		mk(EndMark),
	}
}

// fixtureFile returns the path of a fixture file, skipping the test if the fixtures are absent.
func fixtureFile(t testing.TB, rel string) string { return testenv.Fixture(t, rel) }

// openZstd opens a zstd-compressed file as an Open for Import.
func openZstd(path string) Open {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		d, err := zstd.NewReader(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return zrc{d, f}, nil
	}
}

type zrc struct {
	d *zstd.Decoder
	f *os.File
}

func (z zrc) Read(p []byte) (int, error) { return z.d.Read(p) }
func (z zrc) Close() error               { z.d.Close(); return z.f.Close() }

func readZstd(t testing.TB, path string) []byte {
	rc, err := openZstd(path)()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes serves an in-memory log to Import.
func openBytes(b []byte) Open {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
