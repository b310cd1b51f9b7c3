package record

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/powercut/powercut/pclog"
)

func stackRec(t testing.TB, capture bool) (*Recorder, string) {
	path := filepath.Join(t.TempDir(), "s.pclog")
	r, err := Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: 1 << 20, SectorSize: 512}}}, []Store{NewMemStore(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	if capture {
		r.CaptureStacks()
	}
	return r, path
}

func writeTheCommitRecord(d *Device) error { return d.WriteAt(make([]byte, 512), 0, true) }

// With CaptureStacks the log's operations carry the stack of the code that issued them, kept
// beside the log; without it nothing is kept.
func TestCaptureStacks(t *testing.T) {
	r, path := stackRec(t, true)
	if err := r.Device(0).WriteAt(make([]byte, 512), 512, false); err != nil {
		t.Fatal(err)
	}
	if err := writeTheCommitRecord(r.Device(0)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := LoadStacks(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st[1], "record.writeTheCommitRecord") || !strings.Contains(st[0], "record.TestCaptureStacks") || strings.Contains(st[0], "writeTheCommitRecord") {
		t.Errorf("stacks:\n0: %s\n1: %s", st[0], st[1])
	}
	r, path = stackRec(t, false)
	if err := writeTheCommitRecord(r.Device(0)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if st, err := LoadStacks(path); st != nil || err != nil {
		t.Errorf("stacks kept without CaptureStacks: %v %v", st, err)
	}
}

// BenchmarkRecordStacks measures what capturing stacks costs per write.
func BenchmarkRecordStacks(b *testing.B) {
	for _, capture := range []bool{false, true} {
		name := "off"
		if capture {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			r, _ := stackRec(b, capture)
			defer r.Close()
			buf := make([]byte, 4096)
			d := r.Device(0)
			for i := 0; b.Loop(); i++ {
				if err := d.WriteAt(buf, int64(i%256)*4096, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
