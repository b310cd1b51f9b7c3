package dmlogwrites

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// readAll reads every entry (copying payloads) and returns them with the final error.
func readAll(t *testing.T, b []byte, skip bool) (*Reader, []Entry, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	r.SkipData = skip
	var es []Entry
	for {
		e, err := r.Next()
		if err != nil {
			return r, es, err
		}
		c := *e
		c.Data = bytes.Clone(e.Data)
		es = append(es, c)
	}
}

func TestReaderSynthetic(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		log := buildLog(ss, uint64(len(in)), in)
		for _, skip := range []bool{false, true} {
			// bytes.Reader seeks; the wrapped one cannot, so both ways of skipping are covered.
			for _, seekable := range []bool{true, false} {
				var src io.Reader = bytes.NewReader(log)
				if !seekable {
					src = struct{ io.Reader }{src}
				}
				r, err := NewReader(src)
				if err != nil {
					t.Fatal(err)
				}
				r.SkipData = skip
				sb := r.Superblock()
				if sb.SectorSize != uint32(ss) || sb.NrEntries != uint64(len(in)) || sb.Version != 1 || sb.Undefined != [4]byte{0xde, 0xad, 0xbe, 0xef} {
					t.Fatalf("ss %d: superblock %+v", ss, sb)
				}
				off := int64(ss)
				for i, want := range in {
					e, err := r.Next()
					if err != nil {
						t.Fatalf("ss %d skip %v: entry %d: %v", ss, skip, i, err)
					}
					if e.Index != i || e.Offset != off || e.Sector != want.sector || e.NrSectors != want.nr || e.Flags != want.flags || e.DataLen != want.dataLen || e.Mark != want.mark {
						t.Fatalf("ss %d: entry %d = %+v, want %+v at byte %d", ss, i, e, want, off)
					}
					off += int64(ss)
					if e.IsWrite() {
						n := int(want.nr) * ss
						if skip && e.Data != nil {
							t.Fatalf("entry %d: SkipData but got data", i)
						}
						if !skip && !bytes.Equal(e.Data, pattern(i, n)) {
							t.Fatalf("ss %d: entry %d: payload differs", ss, i)
						}
						off += int64(n)
					}
				}
				if _, err := r.Next(); err != io.EOF {
					t.Fatalf("after the last entry: %v, want io.EOF", err)
				}
				if !strings.Contains(r.End(), "end of file") || r.Beyond() != 0 || r.Count() != len(in) {
					t.Errorf("end %q beyond %d count %d", r.End(), r.Beyond(), r.Count())
				}
				if _, err := r.Next(); err != io.EOF {
					t.Errorf("Next after EOF: %v", err)
				}
			}
		}
	}
}

// TestInterrupted: a stale nr_entries with more valid entries after it.
func TestInterrupted(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		base := buildLog(ss, 4, in)
		zero := make([]byte, ss)
		junk := bytes.Repeat([]byte{0xff}, 3*ss)
		garbage := make([]byte, ss) // a header with unknown flags: an older log or old data
		binary.LittleEndian.PutUint64(garbage[16:], 1<<40)
		cases := []struct {
			name string
			log  []byte
			end  string
		}{
			{"eof", base, "end of file"},
			{"end marker", append(append(bytes.Clone(base), zero...), junk...), "end marker (empty entry header) at byte " + strconv.Itoa(len(base))},
			{"garbage", append(append(bytes.Clone(base), garbage...), junk...), "is not a valid entry (unknown flags 0x10000000000)"},
		}
		for _, c := range cases {
			for _, skip := range []bool{false, true} {
				r, es, err := readAll(t, c.log, skip)
				if err != io.EOF {
					t.Fatalf("ss %d %s: %v, want io.EOF", ss, c.name, err)
				}
				if len(es) != len(in) || r.Beyond() != len(in)-4 {
					t.Errorf("ss %d %s: %d entries, %d beyond; want %d and %d", ss, c.name, len(es), r.Beyond(), len(in), len(in)-4)
				}
				if !strings.Contains(r.End(), c.end) {
					t.Errorf("ss %d %s: end %q, want it to contain %q", ss, c.name, r.End(), c.end)
				}
			}
		}
		// nr_entries 0 (never updated): everything is beyond.
		r, es, err := readAll(t, buildLog(ss, 0, in), false)
		if err != io.EOF || len(es) != len(in) || r.Beyond() != len(in) {
			t.Errorf("ss %d nr_entries 0: %v, %d entries, %d beyond", ss, err, len(es), r.Beyond())
		}
	}
}

// TestTorn: a log cut inside an entry stops at the last whole entry and says so.
func TestTorn(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		full := buildLog(ss, uint64(len(in)), in)
		// Entry 7 is w(32, 3, FLUSH|FUA): find its offset by summing.
		off := ss
		for i := 0; i < 7; i++ {
			off += ss
			if in[i].flags&(FlagMark|FlagDiscard) == 0 {
				off += int(in[i].nr) * ss
			}
		}
		zeroed := bytes.Clone(full[:off+ss])
		clear(zeroed[off:])
		cases := []struct {
			name string
			log  []byte
			why  string
		}{
			{"payload", full[:off+ss+ss+100], "payload of entry 7 cut after " + strconv.Itoa(ss+100) + " of " + strconv.Itoa(3*ss) + " bytes"},
			{"header", full[:off+10], "header block of entry 7 cut after 10 of " + strconv.Itoa(ss) + " bytes"},
			{"boundary", full[:off], "the log ends after 7 of the 13 entries its superblock declares"},
			{"lost tail", zeroed, "entry 7 is empty although the superblock declares 13 entries"},
		}
		for _, c := range cases {
			for _, skip := range []bool{false, true} {
				_, es, err := readAll(t, c.log, skip)
				var torn *TornError
				if !errors.As(err, &torn) || !errors.Is(err, ErrTornTail) {
					t.Fatalf("ss %d %s: %v, want a TornError", ss, c.name, err)
				}
				if len(es) != 7 || torn.Entries != 7 || torn.Offset != int64(off) || !strings.Contains(torn.Why, c.why) {
					t.Errorf("ss %d %s skip %v: %d entries, %+v; want 7 entries, offset %d, why %q", ss, c.name, skip, len(es), torn, off, c.why)
				}
			}
		}
	}
}

// TestMalformed: each kind of bad input gets its own error naming the entry and byte offset.
func TestMalformed(t *testing.T) {
	const ss = 512
	good := func() []byte { return buildLog(ss, 3, []tEntry{mk("a"), w(8, 1, 0), mk("b")}) }
	sbCases := []struct {
		name string
		mod  func(b []byte) []byte
		why  string
	}{
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }, "dm-log-writes superblock: bad magic 0x6a736677736873"},
		{"version", func(b []byte) []byte { b[8] = 2; return b }, "dm-log-writes superblock: unsupported version 2 (want 1)"},
		{"sectorsize", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[24:], 1024); return b }, "sectorsize 1024, want 512 or 4096"},
		{"short", func(b []byte) []byte { return b[:20] }, "log is 20 bytes, too short for a superblock"},
		{"short block", func(b []byte) []byte { return b[:100] }, "log is 100 bytes, too short for its 512-byte superblock"},
		{"empty", func(b []byte) []byte { return nil }, "log is 0 bytes"},
	}
	for _, c := range sbCases {
		_, err := NewReader(bytes.NewReader(c.mod(good())))
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Entry != -1 || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want a superblock error containing %q", c.name, err, c.why)
		}
	}

	// Entry 1 (at byte 1024) is replaced by a bad header.
	entryCases := []struct {
		name string
		e    tEntry
		why  string
	}{
		{"unknown flags", w(8, 1, 0x40), "unknown flags 0x40"},
		{"absurd write", tEntry{sector: 8, nr: uint64(MaxWrite/ss) + 1, data: []byte{}}, "absurd nr_sectors 524289"},
		{"absurd extent", w(1<<60, 1, FlagDiscard), "absurd extent"},
		{"mark too long", tEntry{flags: FlagMark, dataLen: ss - 31}, "mark data_len 481 does not fit in the 512-byte header block (at most 480)"},
		{"mark with sectors", tEntry{flags: FlagMark, nr: 2, dataLen: 1}, "MARK with sector 0 and nr_sectors 2"},
		{"mark and flush", tEntry{flags: FlagMark | FlagFlush, dataLen: 1}, "MARK combined with other flags (FLUSH|MARK)"},
		{"write data_len", tEntry{sector: 8, nr: 1, dataLen: 512}, "data_len 512 on a WRITE entry"},
		{"empty discard", w(8, 0, FlagDiscard), "DISCARD of 0 sectors"},
		{"empty fua", w(8, 0, FlagFUA), "FUA entry with no sectors and no FLUSH flag"},
	}
	for _, c := range entryCases {
		log := buildLog(ss, 3, []tEntry{mk("a"), c.e, mk("b")})
		for _, skip := range []bool{false, true} {
			_, es, err := readAll(t, log, skip)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: %v, want a FormatError", c.name, err)
			}
			if len(es) != 1 || fe.Entry != 1 || fe.Offset != 2*ss || !strings.Contains(fe.Why, c.why) ||
				!strings.HasPrefix(err.Error(), "log entry 1 at byte 1024: ") {
				t.Errorf("%s: %d entries, error %q; want entry 1 at byte 1024, %q", c.name, len(es), err, c.why)
			}
		}
	}
}
