package record

import (
	"fmt"

	"github.com/powercut/powercut/pclog"
)

// Device is one recorded block device. Its methods are safe for concurrent use; the caller must
// not issue two concurrent operations on overlapping ranges if it wants defined results (as with
// any block device).
type Device struct {
	r     *Recorder
	info  pclog.Device
	store Store
}

// Info returns the device's description.
func (d *Device) Info() pclog.Device { return d.info }

// Store returns the backing store.
func (d *Device) Store() Store { return d.store }

// Recorder returns the recording the device belongs to.
func (d *Device) Recorder() *Recorder { return d.r }

// Size is the device size in bytes.
func (d *Device) Size() int64 { return d.info.Size }

func (d *Device) check(op string, off, n int64) error {
	ss := int64(d.info.SectorSize)
	if off < 0 || n <= 0 || off%ss != 0 || n%ss != 0 {
		return fmt.Errorf("%s [%d,+%d): not aligned to the %d-byte sector", op, off, n, ss)
	}
	if off+n > d.info.Size {
		return fmt.Errorf("%s [%d,+%d): past the end of the %d-byte device", op, off, n, d.info.Size)
	}
	return nil
}

// ReadAt reads from the backing store (reads are not recorded).
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.info.Size {
		return 0, fmt.Errorf("read [%d,+%d): outside the %d-byte device", off, len(p), d.info.Size)
	}
	return d.store.ReadAt(p, off)
}

// WriteAt writes p at off, recording a WRITE (with FUA if fua).
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	if err := d.check("write", off, int64(len(p))); err != nil {
		return err
	}
	var fl pclog.Flags
	if fua {
		fl = pclog.FlagFUA
	}
	// Data is captured at submission: a caller reusing p after return cannot change the record.
	data := append([]byte(nil), p...)
	return d.do(&pclog.Record{Kind: pclog.KindWrite, Flags: fl, Offset: off, Length: int64(len(p)), Data: data}, func() error {
		if _, err := d.store.WriteAt(data, off); err != nil {
			return err
		}
		if fua {
			return d.store.Sync()
		}
		return nil
	})
}

// WriteZeroes zeroes [off, off+n), recording a WRITE_ZEROES.
func (d *Device) WriteZeroes(off, n int64, fua bool) error {
	if err := d.check("write-zeroes", off, n); err != nil {
		return err
	}
	var fl pclog.Flags
	if fua {
		fl = pclog.FlagFUA
	}
	return d.do(&pclog.Record{Kind: pclog.KindWriteZeroes, Flags: fl, Offset: off, Length: n}, func() error {
		if err := d.store.Zero(off, n); err != nil {
			return err
		}
		if fua {
			return d.store.Sync()
		}
		return nil
	})
}

// Discard discards [off, off+n), recording a DISCARD. The store zeroes the range (what a reader of
// this store sees); the model decides what a crash may leave.
func (d *Device) Discard(off, n int64) error {
	if err := d.check("discard", off, n); err != nil {
		return err
	}
	return d.do(&pclog.Record{Kind: pclog.KindDiscard, Offset: off, Length: n}, func() error {
		return d.store.Zero(off, n)
	})
}

// Flush makes every write completed before this call durable, recording a FLUSH.
func (d *Device) Flush() error {
	return d.do(&pclog.Record{Kind: pclog.KindFlush}, d.store.Sync)
}

// Do performs fn between the submit and completion points of rec and records rec. Frontends that
// already carry out the I/O themselves use it to keep exact ordering.
func (d *Device) Do(rec *pclog.Record, fn func() error) error { return d.do(rec, fn) }

func (d *Device) do(rec *pclog.Record, fn func() error) error {
	s, err := d.r.Begin()
	if err != nil {
		return err
	}
	d.r.capture(s)
	rec.Submit = s
	rec.Device = d.info.ID
	if fn != nil {
		if err := fn(); err != nil {
			return fmt.Errorf("%s on device %s: %w", rec.Kind, d.info.Name, err)
		}
	}
	return d.r.Complete(rec)
}
