package dmlogwrites

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/powercut/powercut/pclog"
	"github.com/zeebo/xxh3"
)

func importBytes(t *testing.T, log []byte, opt ImportOptions) (*Summary, *pclog.Log) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "x.pclog")
	s, err := Import(openBytes(log), out, opt)
	if err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return s, l
}

func exportBytes(t *testing.T, l *pclog.Log) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Export(l, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImportExportSynthetic(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		log := buildLog(ss, uint64(len(in)), in)
		s, l := importBytes(t, log, ImportOptions{})
		if s.DeviceSize != 1<<20 || !strings.Contains(s.SizeFrom, "1 MiB") || s.Extent != int64(140*ss) || s.ExtentEntry != 8 {
			t.Errorf("ss %d: derived size %d from %q, extent %d of entry %d; want 1 MiB covering %d (entry 8)", ss, s.DeviceSize, s.SizeFrom, s.Extent, s.ExtentEntry, 140*ss)
		}
		wantKinds := []struct {
			k pclog.Kind
			f pclog.Flags
		}{
			{pclog.KindMark, 0}, {pclog.KindWrite, 0}, {pclog.KindWrite, pclog.FlagMeta}, {pclog.KindWrite, pclog.FlagFUA},
			{pclog.KindFlush, 0}, {pclog.KindFlush, pclog.FlagFUA | pclog.FlagMeta}, {pclog.KindWrite, pclog.FlagFUA | pclog.FlagMeta},
			{pclog.KindWrite, pclog.FlagPreflush | pclog.FlagFUA}, {pclog.KindDiscard, 0}, {pclog.KindMark, 0},
			{pclog.KindWrite, pclog.FlagMeta}, {pclog.KindFlush, pclog.FlagFUA}, {pclog.KindMark, 0},
		}
		if len(l.Entries) != len(wantKinds) {
			t.Fatalf("ss %d: %d records, want %d", ss, len(l.Entries), len(wantKinds))
		}
		for i, e := range l.Entries {
			if e.Kind != wantKinds[i].k || e.Flags != wantKinds[i].f {
				t.Errorf("ss %d: record %d = %s %s, want %s %s", ss, i, e.Kind, e.Flags, wantKinds[i].k, wantKinds[i].f)
			}
			if in[i].flags&FlagMark == 0 && in[i].nr > 0 && (e.Offset != int64(in[i].sector)*int64(ss) || e.Length != int64(in[i].nr)*int64(ss)) {
				t.Errorf("ss %d: record %d covers [%d,+%d), want sectors [%d,+%d)", ss, i, e.Offset, e.Length, in[i].sector, in[i].nr)
			}
		}
		if r, _ := l.Record(7); !bytes.Equal(r.Data, pattern(7, 3*ss)) {
			t.Errorf("ss %d: record 7's data differs from the log's payload", ss)
		}
		if l.Entries[12].Name != EndMark || !strings.Contains(l.Header.Note, "2i+1") {
			t.Errorf("ss %d: last mark %q, note %q", ss, l.Entries[12].Name, l.Header.Note)
		}
		got := exportBytes(t, l)
		compareLogs(t, got, log)
		if !bytes.Equal(got[28:32], []byte{0, 0, 0, 0}) {
			t.Errorf("ss %d: exported superblock bytes 28-31 = %x, want zeros", ss, got[28:32])
		}
	}
}

// TestImportInterrupted: entries beyond a stale nr_entries are imported, and the export's
// nr_entries counts them all.
func TestImportInterrupted(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		log := buildLog(ss, 4, in)
		log = append(log, make([]byte, 5*ss)...) // the rest of the log device, zeroed
		s, l := importBytes(t, log, ImportOptions{Size: 4 << 20})
		if s.Entries != len(in) || s.Beyond != len(in)-4 || !strings.Contains(s.End, "end marker") || len(l.Entries) != len(in) {
			t.Fatalf("ss %d: summary %+v, %d records", ss, s, len(l.Entries))
		}
		want := buildLog(ss, uint64(len(in)), in)
		compareLogs(t, exportBytes(t, l), want)
	}
}

// TestImportTorn: a torn tail imports every whole entry and reports the tear.
func TestImportTorn(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		in := sampleEntries()
		log := buildLog(ss, uint64(len(in)), in)
		s, l := importBytes(t, log[:len(log)-2*ss-ss/2], ImportOptions{}) // inside entry 10's payload
		if s.Torn == nil || s.Torn.Entries != 10 || len(l.Entries) != 10 || s.Entries != 10 {
			t.Fatalf("ss %d: torn %v, %d entries, %d records; want a tear after 10 entries", ss, s.Torn, s.Entries, len(l.Entries))
		}
		compareLogs(t, exportBytes(t, l), buildLog(ss, 10, in[:10]))
	}
}

func TestImportErrors(t *testing.T) {
	const ss = 512
	log := buildLog(ss, 13, sampleEntries())
	dir := t.TempDir()
	cases := []struct {
		name string
		log  []byte
		opt  ImportOptions
		want string
	}{
		{"too small", log, ImportOptions{Size: 64 << 10}, "log entry 8 reaches byte 71680, past the end of the 65536-byte device (size from the given size)"},
		{"unaligned", log, ImportOptions{Size: 1<<20 + 100}, "device size 1048676 (from the given size) is not a positive multiple of the log's 512-byte sector size"},
		{"base mismatch", log, ImportOptions{Size: 2 << 20, Base: &pclog.BaseRef{Size: 1 << 20, Hash: "xxh3-128:00"}}, "device size 2097152 differs from the base image's size 1048576"},
		{"malformed", buildLog(ss, 2, []tEntry{mk("a"), w(0, 1, 0x100)}), ImportOptions{}, "log entry 1 at byte 1024: unknown flags 0x100"},
	}
	for _, c := range cases {
		out := filepath.Join(dir, c.name+".pclog")
		_, err := Import(openBytes(c.log), out, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: failed import left %s behind", c.name, out)
		}
	}
}

func TestImportBase(t *testing.T) {
	base := pattern(3, 2<<20)
	size, hash, err := pclog.HashBase(bytes.NewReader(base))
	sum := xxh3.Hash128(base).Bytes()
	if err != nil || size != 2<<20 || hash != "xxh3-128:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("HashBase = %d, %q, %v; want %d, xxh3-128:%x", size, hash, err, 2<<20, sum)
	}
	_, l := importBytes(t, buildLog(512, 13, sampleEntries()), ImportOptions{Base: &pclog.BaseRef{Size: size, Hash: hash, Path: "base.img"}})
	b, ok := l.Header.Base(0)
	if !ok || b.Hash != hash || b.Size != size || l.Header.Devices[0].Size != size {
		t.Errorf("header %+v", l.Header)
	}
}

// TestExportNative exports a pclog recorded natively, with kinds dm-log-writes lacks.
func TestExportNative(t *testing.T) {
	const ss = 4096
	dir := t.TempDir()
	path := filepath.Join(dir, "n.pclog")
	h := pclog.Header{Version: 1, Devices: []pclog.Device{{ID: 3, Name: "d", Size: 1 << 20, SectorSize: ss}}, Source: "in-process"}
	pw, err := pclog.Create(path, h)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(1, 2*ss)
	recs := []*pclog.Record{
		{Kind: pclog.KindWrite, Device: 3, Submit: 1, Complete: 3, Offset: 8 * ss, Length: 2 * ss, Data: data},
		{Kind: pclog.KindWriteZeroes, Device: 3, Flags: pclog.FlagFUA, Submit: 2, Complete: 4, Offset: 0, Length: 3 * ss},
		{Kind: pclog.KindFlush, Device: 3, Submit: 5, Complete: 6},
		{Kind: pclog.KindMark, Device: 3, Submit: 7, Complete: 7, Name: "m"},
		{Kind: pclog.KindDiscard, Device: 3, Flags: pclog.FlagPreflush | pclog.FlagFUA, Submit: 8, Complete: 9, Offset: 16 * ss, Length: 4 * ss},
	}
	for _, r := range recs {
		if err := pw.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var b bytes.Buffer
	s, err := Export(l, &b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Zeroes != 1 || s.Entries != 5 {
		t.Errorf("summary %+v", s)
	}
	want := buildLog(ss, 5, []tEntry{
		{sector: 8, nr: 2, data: data},
		{sector: 0, nr: 3, flags: FlagFUA, data: make([]byte, 3*ss)},
		w(0, 0, FlagFlush),
		mk("m"),
		w(16, 4, FlagDiscard|FlagFlush|FlagFUA),
	})
	compareLogs(t, b.Bytes(), want)

	// What cannot be exported.
	long := filepath.Join(dir, "long.pclog")
	pw, _ = pclog.Create(long, pclog.Header{Version: 1, Devices: []pclog.Device{{ID: 0, Size: 1 << 20, SectorSize: 512}}})
	pw.Append(&pclog.Record{Kind: pclog.KindMark, Submit: 1, Complete: 1, Name: strings.Repeat("x", 481)})
	pw.Close()
	two := filepath.Join(dir, "two.pclog")
	pw, _ = pclog.Create(two, pclog.Header{Version: 1, Devices: []pclog.Device{{ID: 0, Size: 1 << 20, SectorSize: 512}, {ID: 1, Size: 1 << 20, SectorSize: 512}}})
	pw.Close()
	for path, want := range map[string]string{
		long: "record 0: mark \"xxx", two: "a dm-log-writes log holds one device; this pclog has 2",
	} {
		l, err := pclog.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Export(l, &bytes.Buffer{})
		l.Close()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("export %s: %v, want an error containing %q", filepath.Base(path), err, want)
		}
	}
}
