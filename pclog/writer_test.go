package pclog

import (
	"path/filepath"
	"testing"
)

// Unappend takes back the last record (a FLUSH whose fsync failed) and leaves a valid log.
func TestUnappend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.pclog")
	w, err := Create(path, Header{Devices: []Device{{ID: 0, Name: "d", Size: 1 << 20, SectorSize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Unappend(); err == nil {
		t.Fatal("Unappend on an empty log succeeded")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Append(&Record{Kind: KindWrite, Submit: 1, Complete: 2, Offset: 0, Length: 512, Data: make([]byte, 512)}))
	must(w.Append(&Record{Kind: KindFlush, Submit: 3, Complete: 4}))
	must(w.Unappend())
	if err := w.Unappend(); err == nil {
		t.Fatal("a second Unappend succeeded")
	}
	must(w.Append(&Record{Kind: KindMark, Submit: 5, Complete: 5, Name: "after"}))
	must(w.Close())
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != 2 || l.Entries[0].Kind != KindWrite || l.Entries[1].Name != "after" || l.Torn != nil {
		t.Fatalf("log after Unappend: %+v (torn %v)", l.Entries, l.Torn)
	}
}
