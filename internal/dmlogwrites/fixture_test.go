package dmlogwrites

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/powercut/powercut/pclog"
)

// TestFixtureImportExport imports the real kernel recording and exports it back.
func TestFixtureImportExport(t *testing.T) {
	logPath := fixtureFile(t, "ext4-ordered/log.bin.zst")
	orig := readZstd(t, logPath)
	if sum := md5.Sum(orig); hex.EncodeToString(sum[:]) != "b86170415d039feb0cc142166162770e" {
		t.Fatalf("fixture log md5 %x, want the README's b86170415d039feb0cc142166162770e", sum)
	}

	out := filepath.Join(t.TempDir(), "f.pclog")
	s, err := Import(openZstd(logPath), out, ImportOptions{Size: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	wantClass := map[string]int{
		"WRITE": 10, "META": 84, "FUA": 1, "FUA|META": 17,
		"FLUSH (no data)": 8, "FLUSH|FUA|META (no data)": 13, "DISCARD": 2, "MARK": 15,
	}
	if !maps.Equal(s.ByClass, wantClass) {
		t.Errorf("entries by flags = %v, want %v", s.ByClass, wantClass)
	}
	if s.Entries != 150 || s.Superblock.NrEntries != 150 || s.Superblock.SectorSize != 512 {
		t.Errorf("entries %d, superblock %+v; want 150 entries, nr_entries 150, sectorsize 512", s.Entries, s.Superblock)
	}
	if s.WriteBytes != 1_073_152 || s.DiscardBytes != 104_886_272 {
		t.Errorf("write bytes %d, discard bytes %d; want 1073152 and 104886272", s.WriteBytes, s.DiscardBytes)
	}
	wantMarks := []MarkAt{{0, "mount"}, {13, "fsync-1"}, {23, "fsync-2"}, {33, "fsync-3"}, {43, "fsync-4"},
		{53, "fsync-5"}, {64, "fsync-6"}, {75, "fsync-7"}, {86, "fsync-8"}, {92, "overwrite-1"},
		{113, "rename-2"}, {124, "unlink-3"}, {134, "trim"}, {148, "umount"}, {149, "dm-log-writes-end"}}
	if !slices.Equal(s.Marks, wantMarks) {
		t.Errorf("marks = %v, want %v", s.Marks, wantMarks)
	}
	if s.Torn != nil || s.Beyond != 0 {
		t.Errorf("torn %v, beyond %d: the fixture is a whole, cleanly closed log", s.Torn, s.Beyond)
	}
	wantKind := map[pclog.Kind]int{pclog.KindWrite: 112, pclog.KindFlush: 21, pclog.KindDiscard: 2, pclog.KindMark: 15}
	if !maps.Equal(s.ByKind, wantKind) {
		t.Errorf("records by kind = %v, want %v", s.ByKind, wantKind)
	}

	l, err := pclog.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Header.Source != "dm-log-writes" || len(l.Header.Devices) != 1 || l.Header.Devices[0].Size != 128<<20 || l.Header.Devices[0].SectorSize != 512 {
		t.Errorf("header %+v", l.Header)
	}
	if len(l.Entries) != 150 || l.DataBytes != 1_073_152 || l.Torn != nil {
		t.Fatalf("pclog has %d entries, %d data bytes, torn %v", len(l.Entries), l.DataBytes, l.Torn)
	}
	for i, e := range l.Entries {
		want := uint64(2*i + 2)
		if e.Complete != want || (e.Kind == pclog.KindMark && e.Submit != want) || (e.Kind != pclog.KindMark && e.Submit != want-1) {
			t.Fatalf("entry %d (%s): submit %d complete %d, want %d/%d", i, e.Kind, e.Submit, e.Complete, want-1, want)
		}
	}
	// Entry 145 is a data-less FLUSH|FUA|META (sector 184 in the raw log): the sector is kept as
	// the record's offset.
	if e := l.Entries[145]; e.Kind != pclog.KindFlush || e.Flags != pclog.FlagFUA|pclog.FlagMeta || e.Offset != 184*512 || e.Length != 0 {
		t.Errorf("entry 145 = %s %s [%d,+%d), want FLUSH FUA|META at offset %d, length 0", e.Kind, e.Flags, e.Offset, e.Length, 184*512)
	}
	// The 13 FLUSH|FUA|META entries carry a sector (248, 312, ...); the 8 plain FLUSHes sector 0.
	var withSector []int64
	for _, e := range l.Entries {
		if e.Kind == pclog.KindFlush && e.Offset != 0 {
			if e.Flags != pclog.FlagFUA|pclog.FlagMeta {
				t.Errorf("FLUSH %s with offset %d, want only the FLUSH|FUA|META ones to have a sector", e.Flags, e.Offset)
			}
			withSector = append(withSector, e.Offset/512)
		}
	}
	if len(withSector) != 13 || withSector[0] != 248 || withSector[1] != 312 {
		t.Errorf("sectors of the data-less flushes = %v, want 13 starting 248, 312", withSector)
	}

	var got bytes.Buffer
	es, err := Export(l, &got)
	if err != nil {
		t.Fatal(err)
	}
	if es.Entries != 150 || es.Bytes != int64(len(orig)) {
		t.Errorf("export summary %+v, want 150 entries and %d bytes", es, len(orig))
	}
	compareLogs(t, got.Bytes(), orig)
}

// compareLogs compares two logs byte for byte except superblock bytes 28-31.
func compareLogs(t *testing.T, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("exported %d bytes, want %d", len(got), len(want))
	}
	g, w := slices.Clone(got), slices.Clone(want)
	for _, b := range [][]byte{g, w} {
		if len(b) >= 32 {
			clear(b[28:32])
		}
	}
	if !bytes.Equal(g, w) {
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("first difference at byte %d: got %#x, want %#x", i, g[i], w[i])
			}
		}
		t.Fatalf("one log is a prefix of the other")
	}
}
