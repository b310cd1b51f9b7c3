package pclog_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/powercut/powercut/pclog"
)

// FuzzReader: the pclog reader must never panic; any input either fails to open or yields whole,
// valid records and then ends in io.EOF, a *pclog.TornError, or an error, and keeps returning it.
func FuzzReader(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.pclog")
	h := pclog.Header{Version: pclog.FormatVersion, Source: "fuzz", Devices: []pclog.Device{
		{ID: 0, Name: "a", Size: 1 << 20, SectorSize: 512}, {ID: 7, Name: "b", Size: 1 << 20, SectorSize: 4096}}}
	w, err := pclog.Create(path, h)
	if err != nil {
		f.Fatal(err)
	}
	recs := []*pclog.Record{
		{Kind: pclog.KindWrite, Device: 0, Submit: 1, Complete: 2, Offset: 512, Length: 1024, Data: bytes.Repeat([]byte{1, 2, 3, 4}, 256)},
		{Kind: pclog.KindWriteZeroes, Device: 7, Flags: pclog.FlagFUA, Submit: 3, Complete: 4, Offset: 4096, Length: 8192},
		{Kind: pclog.KindFlush, Device: 0, Flags: pclog.FlagMeta, Submit: 5, Complete: 6},
		{Kind: pclog.KindDiscard, Device: 7, Flags: pclog.FlagPreflush, Submit: 7, Complete: 8, Offset: 0, Length: 4096},
		{Kind: pclog.KindMark, Device: 0, Submit: 9, Complete: 9, Name: "mark-1"},
	}
	for _, r := range recs {
		if err := w.Append(r); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	full, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add(full[:len(full)-3])                  // torn mark
	f.Add(full[:len(full)-len("mark-1")-48-9]) // torn inside the discard
	bad := bytes.Clone(full)
	bad[len(bad)-60] ^= 0xff // checksum mismatch with data after it
	f.Add(bad)
	f.Add(full[:20])

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, keep := range []bool{false, true} {
			r, err := pclog.NewReader(bytes.NewReader(data))
			if err != nil {
				return
			}
			r.Keep = keep
			hdr := r.Header()
			for n := uint64(0); ; n++ {
				off := r.Offset()
				rec, payOff, err := r.Next()
				if err != nil {
					var torn *pclog.TornError
					if errors.As(err, &torn) {
						if !errors.Is(err, pclog.ErrTornTail) || torn.Recovered != n || torn.Offset != off {
							t.Fatalf("torn error %+v after %d records at byte %d", torn, n, off)
						}
					}
					if _, _, err2 := r.Next(); err2 != err {
						t.Fatalf("Next after %v returned %v", err, err2)
					}
					if err == io.EOF && off != int64(len(data)) {
						t.Fatalf("io.EOF at byte %d of %d", off, len(data))
					}
					break
				}
				if err := rec.Validate(&hdr); err != nil {
					t.Fatalf("record %d passed the reader but not Validate: %v", n, err)
				}
				if payOff != uint64(off)+pclog.RecHeaderSize || r.Count() != n+1 {
					t.Fatalf("record %d: payload offset %d, record offset %d, count %d", n, payOff, off, r.Count())
				}
				if rec.Kind == pclog.KindWrite && !bytes.Equal(rec.Data, data[payOff:payOff+uint64(rec.Length)]) {
					t.Fatalf("record %d: data is not the bytes at its payload offset", n)
				}
			}
		}
	})
}

// TestReaderShortPayloadAllocation: a record whose length field claims a huge payload in a file
// that ends right after it is a torn tail, found without allocating the claimed size (a corrupt
// or torn file must not cost MaxPayload bytes of memory per read).
func TestReaderShortPayloadAllocation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pclog")
	w, err := pclog.Create(path, pclog.Header{Version: pclog.FormatVersion, Devices: []pclog.Device{{ID: 0, Size: 1 << 30, SectorSize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(&pclog.Record{Kind: pclog.KindWrite, Submit: 1, Complete: 2, Offset: 0, Length: 512, Data: make([]byte, 512)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := len(b) - 512 - pclog.RecHeaderSize
	putLE32(b[rec+8:], pclog.MaxPayload) // payloadLen
	b = b[:rec+pclog.RecHeaderSize+100]
	for _, keep := range []bool{false, true} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := pclog.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r.Keep = keep
		_, _, err = r.Next()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, pclog.ErrTornTail) {
			t.Fatalf("Next = %v, want a torn tail", err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
			t.Errorf("keep=%v: reading a %d-byte file allocated %d MiB", keep, len(b), n>>20)
		}
	}
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
