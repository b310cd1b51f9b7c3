package dmlogwrites

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzReader: on any input the reader must not panic, must end in io.EOF, a torn tail or a
// malformed-log error, must give the same entries whether it reads or skips payloads, and every
// entry it accepts must map to a pclog record and back to the same flags and the same header block
// (the export's encoding).
func FuzzReader(f *testing.F) {
	// Small seeds: the fuzzer mutates and minimizes them faster.
	small := []tEntry{mk("m"), w(8, 1, FlagFUA), w(3, 0, FlagFlush|FlagFUA), w(2, 9, FlagDiscard), w(1, 1, FlagFlush|FlagMetadata), mk(EndMark)}
	full := buildLog(512, uint64(len(small)), small)
	f.Add(full)
	f.Add(buildLog(512, 2, small))                                   // stale nr_entries
	f.Add(append(buildLog(512, 0, small[:3]), make([]byte, 512)...)) // end marker
	f.Add(full[:len(full)-512-7])                                    // torn
	f.Add(buildLog(4096, 3, small[:3]))                              // 4096-byte sectors (large inputs fuzz slowly)
	f.Add(buildLog(512, 2, []tEntry{mk("a"), w(0, 1, 0x40)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		type seen struct {
			e    Entry
			data []byte
		}
		run := func(skip bool) ([]seen, *Reader, error) {
			// A small buffer makes skipping take the seek path more often.
			r, err := newReader(bytes.NewReader(data), 4096)
			if err != nil {
				return nil, nil, err
			}
			r.SkipData = skip
			var out []seen
			for {
				e, err := r.Next()
				if err != nil {
					if err2 := func() error { _, e2 := r.Next(); return e2 }(); err2 != err {
						t.Fatalf("Next after %v returned %v", err, err2)
					}
					return out, r, err
				}
				out = append(out, seen{*e, bytes.Clone(e.Data)})
			}
		}
		a, r, errA := run(false)
		b, _, errB := run(true)
		if r == nil {
			var fe *FormatError
			if !errors.As(errA, &fe) || fe.Entry != -1 {
				t.Fatalf("NewReader: %v, want a superblock FormatError", errA)
			}
			return
		}
		var fe *FormatError
		if errA != io.EOF && !errors.Is(errA, ErrTornTail) && !errors.As(errA, &fe) {
			t.Fatalf("reader ended with %v", errA)
		}
		if (errA == nil) != (errB == nil) || errA.Error() != errB.Error() || len(a) != len(b) {
			t.Fatalf("reading and skipping payloads differ: %d entries, %v vs %d entries, %v", len(a), errA, len(b), errB)
		}
		ss := int64(r.Superblock().SectorSize)
		off := ss
		for i := range a {
			e := &a[i].e
			if b[i].e.Offset != e.Offset || b[i].e.Flags != e.Flags || b[i].e.Mark != e.Mark {
				t.Fatalf("entry %d differs when skipping payloads", i)
			}
			if e.Index != i || e.Offset != off {
				t.Fatalf("entry %d: index %d offset %d, want offset %d", i, e.Index, e.Offset, off)
			}
			size := ss
			if e.IsWrite() {
				size += int64(e.NrSectors) * ss
				if int64(len(a[i].data)) != int64(e.NrSectors)*ss || !bytes.Equal(a[i].data, data[e.Offset+ss:e.Offset+size]) {
					t.Fatalf("entry %d: payload is not the %d bytes after its header", i, e.NrSectors*uint64(ss))
				}
			}
			k, fl := pclogKind(e)
			if got := dmFlags(k, fl); got != e.Flags {
				t.Fatalf("entry %d: flags %s map to %s %s and back to %s", i, FlagString(e.Flags), k, fl, FlagString(got))
			}
			// The export writes this header block; it must equal the input's whenever the
			// input's block is canonical (zeros after the fields and mark text).
			blk := data[e.Offset : e.Offset+ss]
			used := entryFields + int64(len(e.Mark))
			if !bytes.Equal(blk[used:], make([]byte, ss-used)) {
				off += size
				continue
			}
			enc := make([]byte, ss)
			binary.LittleEndian.PutUint64(enc[0:], e.Sector)
			binary.LittleEndian.PutUint64(enc[8:], e.NrSectors)
			binary.LittleEndian.PutUint64(enc[16:], dmFlags(k, fl))
			binary.LittleEndian.PutUint64(enc[24:], uint64(len(e.Mark)))
			copy(enc[entryFields:], e.Mark)
			if !bytes.Equal(enc, blk) {
				t.Fatalf("entry %d: re-encoded header block differs", i)
			}
			off += size
		}
		if errA == io.EOF && r.Count() < int(min(r.Superblock().NrEntries, 1<<30)) {
			t.Fatalf("clean end after %d entries of %d declared", r.Count(), r.Superblock().NrEntries)
		}
	})
}
