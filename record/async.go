package record

import (
	"errors"
	"fmt"
	"sync"

	"github.com/powercut/powercut/pclog"
)

// Op is one operation for Device.Submit.
type Op struct {
	Kind pclog.Kind // KindWrite, KindWriteZeroes, KindDiscard or KindFlush
	// Flags: FlagFUA (durable once complete) and FlagPreflush (a FLUSH precedes the write).
	Flags  pclog.Flags
	Offset int64
	// Data is the content of a WRITE (its length is the operation's); Length the extent of a
	// WRITE_ZEROES or DISCARD.
	Data   []byte
	Length int64
}

// Write returns the WRITE of p at off with flags fl (FlagFUA, FlagPreflush).
func Write(p []byte, off int64, fl pclog.Flags) Op {
	return Op{Kind: pclog.KindWrite, Flags: fl, Offset: off, Data: p, Length: int64(len(p))}
}

// FlushOp returns a FLUSH.
func FlushOp() Op { return Op{Kind: pclog.KindFlush} }

// Pending is an operation submitted with Device.Submit whose completion has not been taken yet:
// in the recording it is in flight until Wait. Its methods are safe for concurrent use.
type Pending struct {
	d    *Device
	rec  *pclog.Record
	err  error // from the store, at submission
	once sync.Once
	done error
}

// ErrNotCompleted is returned by Recorder.Close while operations submitted with Device.Submit
// were never waited for: they are not in the log, so no crash state shows them.
var ErrNotCompleted = errors.New("record: submitted operations were never completed (Pending.Wait)")

// Submit issues op and returns at once with its completion handle. The submit point is taken
// and the backing store carries out the operation before Submit returns (so the workload reads
// back what it wrote, deterministically); the completion point is taken by Pending.Wait. Between
// the two the operation is in flight: a FLUSH submitted meanwhile does not cover it, and writes
// in flight together may land in either order. This is how a test writes concurrent and
// overlapping I/O without goroutines or gates, in an order it chooses.
//
// An operation never waited for is not recorded (Recorder.Close reports ErrNotCompleted).
func (d *Device) Submit(op Op) (*Pending, error) {
	rec, fn, err := d.prepare(op)
	if err != nil {
		return nil, err
	}
	s, err := d.r.Begin()
	if err != nil {
		return nil, err
	}
	d.r.capture(s)
	rec.Submit = s
	rec.Device = d.info.ID
	p := &Pending{d: d, rec: rec}
	if err := fn(); err != nil {
		p.err = fmt.Errorf("%s on device %s: %w", rec.Kind, d.info.Name, err)
	}
	d.r.pending.Add(1)
	return p, nil
}

// Wait completes the operation: it takes the completion point and appends the record (synced to
// stable storage for FLUSH, FUA and PREFLUSH), or returns the store's error, in which case the
// operation is not recorded. Later calls return the same result.
func (p *Pending) Wait() error {
	p.once.Do(func() {
		defer p.d.r.pending.Add(-1)
		if p.err != nil {
			p.done = p.err
			return
		}
		p.done = p.d.r.Complete(p.rec)
	})
	return p.done
}

// WritePreflush writes p at off with a FLUSH before it (REQ_PREFLUSH): every write completed
// before this call is durable before the data is written; with fua the data is durable too once
// the call returns. A journal commit block is the typical use.
func (d *Device) WritePreflush(p []byte, off int64, fua bool) error {
	fl := pclog.FlagPreflush
	if fua {
		fl |= pclog.FlagFUA
	}
	h, err := d.Submit(Write(p, off, fl))
	if err != nil {
		return err
	}
	return h.Wait()
}

// prepare validates op and returns its record and the store call that carries it out. Data is
// captured at submission: a caller reusing op.Data afterwards cannot change the record.
func (d *Device) prepare(op Op) (*pclog.Record, func() error, error) {
	fua := op.Flags&pclog.FlagFUA != 0
	pre := op.Flags&pclog.FlagPreflush != 0
	syncIf := func(b bool) error {
		if b {
			return d.store.Sync()
		}
		return nil
	}
	switch op.Kind {
	case pclog.KindWrite:
		if err := d.check("write", op.Offset, int64(len(op.Data))); err != nil {
			return nil, nil, err
		}
		data := append([]byte(nil), op.Data...)
		rec := &pclog.Record{Kind: op.Kind, Flags: op.Flags, Offset: op.Offset, Length: int64(len(data)), Data: data}
		return rec, func() error {
			if err := syncIf(pre); err != nil {
				return err
			}
			if _, err := d.store.WriteAt(data, op.Offset); err != nil {
				return err
			}
			return syncIf(fua)
		}, nil
	case pclog.KindWriteZeroes, pclog.KindDiscard:
		if err := d.check(op.Kind.String(), op.Offset, op.Length); err != nil {
			return nil, nil, err
		}
		rec := &pclog.Record{Kind: op.Kind, Flags: op.Flags, Offset: op.Offset, Length: op.Length}
		return rec, func() error {
			if err := syncIf(pre); err != nil {
				return err
			}
			if err := d.store.Zero(op.Offset, op.Length); err != nil {
				return err
			}
			return syncIf(fua)
		}, nil
	case pclog.KindFlush:
		return &pclog.Record{Kind: op.Kind, Flags: op.Flags}, d.store.Sync, nil
	}
	return nil, nil, fmt.Errorf("record: cannot submit a %s operation", op.Kind)
}
