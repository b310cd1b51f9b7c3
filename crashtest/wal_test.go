package crashtest_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The engine under test: a toy write-ahead log on a block device. Record i (from 1) fills
// sector i; sector 0 holds the head, the number of committed records. Recovery trusts the head
// and reads records 1..head back, checking each one's checksum.

// walDisk is the block interface the WAL needs: a *record.Device during the workload,
// crashtest.Crash.Device on a crash image.
type walDisk interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
}

// walBug plants one ordering bug in Append.
type walBug int

const (
	walCorrect        walBug = iota // write the record, FLUSH, write the head with FUA
	walAckBeforeFlush               // write the record and the head, acknowledge: nothing is durable
	walHeadBeforeData               // write the head with FUA but no FLUSH first: it may land before the record
)

func (b walBug) String() string {
	return [...]string{"correct", "ack-before-flush", "head-before-data"}[b]
}

const sector = 512

var walMagic = [4]byte{'T', 'W', 'A', 'L'}

type wal struct {
	d    walDisk
	head uint64
	bug  walBug
}

func newWAL(d walDisk, bug walBug) *wal { return &wal{d: d, bug: bug} }

// Append commits record seq (the next one) with payload; on return it is durable (unless bugged).
func (w *wal) Append(seq uint64, payload []byte) error { return w.AppendBatch(seq, payload) }

// AppendBatch commits records first, first+1, ... in one head update: all or none survive.
func (w *wal) AppendBatch(first uint64, payloads ...[]byte) error {
	if first != w.head+1 {
		return fmt.Errorf("wal: append %d after %d", first, w.head)
	}
	for i, p := range payloads {
		if err := w.write(first+uint64(i), p); err != nil {
			return err
		}
	}
	return w.commit(first + uint64(len(payloads)) - 1)
}

func (w *wal) write(seq uint64, payload []byte) error {
	if len(payload) > sector-16 {
		return fmt.Errorf("wal: record %d of %d bytes", seq, len(payload))
	}
	rec := make([]byte, sector)
	copy(rec, walMagic[:])
	binary.LittleEndian.PutUint64(rec[4:], seq)
	binary.LittleEndian.PutUint16(rec[12:], uint16(len(payload)))
	copy(rec[16:], payload)
	binary.LittleEndian.PutUint16(rec[14:], uint16(crc32.ChecksumIEEE(rec[16:])))
	return w.d.WriteAt(rec, int64(seq)*sector, false)
}

// commit makes records up to seq the committed ones.
func (w *wal) commit(seq uint64) error {
	if w.bug == walCorrect {
		if err := w.d.Flush(); err != nil {
			return err
		}
	}
	head := make([]byte, sector)
	binary.LittleEndian.PutUint64(head, seq)
	if err := w.d.WriteAt(head, 0, w.bug != walAckBeforeFlush); err != nil {
		return err
	}
	w.head = seq
	return nil
}

type walRecord struct {
	Seq     uint64
	Payload []byte
}

var errCorrupt = errors.New("wal: corrupt record")

// openWAL recovers the committed records.
func openWAL(d walDisk) ([]walRecord, error) {
	buf := make([]byte, sector)
	if _, err := d.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	head := binary.LittleEndian.Uint64(buf)
	var out []walRecord
	for i := uint64(1); i <= head; i++ {
		if _, err := d.ReadAt(buf, int64(i)*sector); err != nil {
			return out, err
		}
		n := binary.LittleEndian.Uint16(buf[12:])
		if [4]byte(buf[:4]) != walMagic || binary.LittleEndian.Uint64(buf[4:]) != i || n > sector-16 ||
			binary.LittleEndian.Uint16(buf[14:]) != uint16(crc32.ChecksumIEEE(buf[16:])) {
			return out, fmt.Errorf("%w %d of %d", errCorrupt, i, head)
		}
		out = append(out, walRecord{Seq: i, Payload: append([]byte(nil), buf[16:16+n]...)})
	}
	return out, nil
}
