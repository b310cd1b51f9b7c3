package dmlogwrites

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/powercut/powercut/pclog"
)

// ExportSummary describes an exported log.
type ExportSummary struct {
	Entries    int
	SectorSize int
	ByKind     map[pclog.Kind]int
	// Zeroes is how many WRITE_ZEROES records became zero-filled WRITE entries.
	Zeroes int
	// Bytes is the size of the log written.
	Bytes int64
	// Torn is set when the pclog had a torn tail (its recovered records were exported).
	Torn *pclog.TornError
}

// Export writes l as a dm-log-writes log to w: superblock, then one entry per record in pclog
// (completion) order. l must have exactly one device.
func Export(l *pclog.Log, w io.Writer) (*ExportSummary, error) {
	if n := len(l.Header.Devices); n != 1 {
		return nil, fmt.Errorf("a dm-log-writes log holds one device; this pclog has %d", n)
	}
	dev := l.Header.Devices[0]
	ss := int64(dev.SectorSize)
	s := &ExportSummary{Entries: len(l.Entries), SectorSize: int(ss), ByKind: map[pclog.Kind]int{}, Torn: l.Torn}
	bw := bufio.NewWriterSize(w, 1<<20)
	block := make([]byte, ss)
	binary.LittleEndian.PutUint64(block[0:], Magic)
	binary.LittleEndian.PutUint64(block[8:], Version)
	binary.LittleEndian.PutUint64(block[16:], uint64(len(l.Entries)))
	binary.LittleEndian.PutUint32(block[24:], uint32(ss))
	if _, err := bw.Write(block); err != nil {
		return nil, fmt.Errorf("write superblock: %w", err)
	}
	s.Bytes = ss
	buf := make([]byte, 1<<20)
	for i := range l.Entries {
		e := &l.Entries[i]
		clear(block)
		var sector, nr uint64
		switch e.Kind {
		case pclog.KindWrite, pclog.KindWriteZeroes, pclog.KindDiscard:
			sector, nr = uint64(e.Offset/ss), uint64(e.Length/ss)
		case pclog.KindFlush:
			sector = uint64(e.Offset / ss) // the sector an imported FLUSH entry had; 0 when recorded natively
		case pclog.KindMark:
			if int64(len(e.Name)) > ss-entryFields {
				return nil, fmt.Errorf("record %d: mark %q is %d bytes, more than the %d a %d-byte dm-log-writes entry holds", i, e.Name, len(e.Name), ss-entryFields, ss)
			}
			binary.LittleEndian.PutUint64(block[24:], uint64(len(e.Name)))
			copy(block[entryFields:], e.Name)
		default:
			return nil, fmt.Errorf("record %d: cannot export a %s", i, e.Kind)
		}
		binary.LittleEndian.PutUint64(block[0:], sector)
		binary.LittleEndian.PutUint64(block[8:], nr)
		binary.LittleEndian.PutUint64(block[16:], dmFlags(e.Kind, e.Flags))
		if _, err := bw.Write(block); err != nil {
			return nil, fmt.Errorf("write entry %d: %w", i, err)
		}
		s.Bytes += ss
		s.ByKind[e.Kind]++
		switch e.Kind {
		case pclog.KindWrite:
			src := io.NewSectionReader(l.ReaderAt(), e.DataOff, e.Length)
			n, err := io.CopyBuffer(bw, src, buf)
			if err == nil && n != e.Length {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return nil, fmt.Errorf("write entry %d: copy %d data bytes of record %d: %w", i, e.Length, i, err)
			}
			s.Bytes += n
		case pclog.KindWriteZeroes:
			// dm-log-writes has no write-zeroes entry: a WRITE of zeros has the same effect.
			s.Zeroes++
			clear(buf)
			for left := e.Length; left > 0; {
				k := min(left, int64(len(buf)))
				if _, err := bw.Write(buf[:k]); err != nil {
					return nil, fmt.Errorf("write entry %d: %w", i, err)
				}
				left -= k
			}
			s.Bytes += e.Length
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("write log: %w", err)
	}
	return s, nil
}
