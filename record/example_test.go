package record_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// A workload records into a pclog through a Device; an acknowledgement is a mark with an
// ordinal and a name.
func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "w.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: 1 << 20, SectorSize: 512}}}
	rec, err := record.Create(path, h, []record.Store{record.NewMemStore(1 << 20)})
	if err != nil {
		fmt.Println(err)
		return
	}
	d := rec.Device(0)
	_ = d.WriteAt(make([]byte, 4096), 0, false)     // data
	_ = d.WritePreflush(make([]byte, 512), 0, true) // commit block: PREFLUSH|FUA
	_ = rec.Ack(1, "commit")
	_ = rec.Close()

	l, _ := pclog.Open(path)
	defer l.Close()
	for _, e := range l.Entries {
		if a, ok := record.ParseAck(e.Name); ok && e.Kind == pclog.KindMark {
			fmt.Printf("%d..%d ack of op %d (%s)\n", e.Submit, e.Complete, a.Ordinal, a.Name)
			continue
		}
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%d..%d %s [%d,+%d) %s", e.Submit, e.Complete, e.Kind, e.Offset, e.Length, e.Flags)))
	}
	// Output:
	// 1..2 WRITE [0,+4096)
	// 3..4 WRITE [0,+512) PREFLUSH|FUA
	// 5..5 ack of op 1 (commit)
}

// Submit issues an operation and returns before its completion: between Submit and Wait it is
// in flight, so a FLUSH submitted meanwhile does not cover it.
func ExampleDevice_Submit() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "w.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: 1 << 20, SectorSize: 512}}}
	rec, _ := record.Create(path, h, []record.Store{record.NewMemStore(1 << 20)})
	d := rec.Device(0)
	a, _ := d.Submit(record.Write(make([]byte, 512), 0, 0))
	b, _ := d.Submit(record.Write(make([]byte, 1024), 0, 0)) // overlaps a, in flight together
	f, _ := d.Submit(record.FlushOp())                       // covers neither
	_ = b.Wait()
	_ = a.Wait()
	_ = f.Wait()
	_ = rec.Close()

	l, _ := pclog.Open(path)
	defer l.Close()
	for _, e := range l.Entries {
		fmt.Printf("submitted %d, completed %d: %s [%d,+%d)\n", e.Submit, e.Complete, e.Kind, e.Offset, e.Length)
	}
	// Output:
	// submitted 2, completed 4: WRITE [0,+1024)
	// submitted 1, completed 5: WRITE [0,+512)
	// submitted 3, completed 6: FLUSH [0,+0)
}
