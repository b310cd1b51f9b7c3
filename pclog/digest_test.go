package pclog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// writeLog writes a log of three records; data fills the write's payload.
func writeLog(t *testing.T, path string, data byte, records int) {
	t.Helper()
	w, err := Create(path, Header{Devices: []Device{{ID: 0, Name: "d", Size: 1 << 20, SectorSize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	recs := []*Record{
		{Kind: KindWrite, Submit: 1, Complete: 2, Offset: 0, Length: 512, Data: bytes.Repeat([]byte{data}, 512)},
		{Kind: KindFlush, Submit: 3, Complete: 4},
		{Kind: KindMark, Submit: 5, Complete: 5, Name: "m"},
	}
	for _, r := range recs[:records] {
		if err := w.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func digestOf(t *testing.T, path string) string {
	t.Helper()
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Digest
}

// The digest is the recording's content: the same operations and data under another name give
// the same digest; one byte of data, or one record more, another; a torn tail counts only the
// whole records before it (what is explored).
func TestDigestIsTheContent(t *testing.T) {
	dir := t.TempDir()
	a, copyA, other, shorter := filepath.Join(dir, "a"), filepath.Join(dir, "copy"), filepath.Join(dir, "other"), filepath.Join(dir, "shorter")
	writeLog(t, a, 1, 3)
	writeLog(t, copyA, 1, 3)
	writeLog(t, other, 2, 3)
	writeLog(t, shorter, 1, 2)
	if digestOf(t, a) != digestOf(t, copyA) {
		t.Error("the same recording written twice has two digests")
	}
	if digestOf(t, a) == digestOf(t, other) {
		t.Error("recordings whose write data differ have one digest")
	}
	if digestOf(t, a) == digestOf(t, shorter) {
		t.Error("a recording and its prefix have one digest")
	}
	b, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(dir, "torn")
	if err := os.WriteFile(torn, b[:len(b)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if digestOf(t, torn) != digestOf(t, shorter) {
		t.Error("a torn tail's digest is not that of the whole records before it")
	}
}
