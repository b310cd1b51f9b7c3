package verify

import (
	"github.com/powercut/powercut/record"
)

// RecordTarget runs the workload through an in-process recorded device, so the recording can be
// explored afterwards (powercut explore --verify TRACKFILE). It marks every flush (Marker).
type RecordTarget struct {
	Dev *record.Device
	// LieAboutFlush makes Flush report success without issuing the FLUSH to the device: a device
	// that acknowledges flushes it never performs. The recording then holds the writes and the
	// workload's flush marks but no FLUSH, which is exactly what such a device looks like from
	// below; ExploreChecker must catch it.
	LieAboutFlush bool
}

// ReadAt implements Target.
func (t *RecordTarget) ReadAt(p []byte, off int64) (int, error) { return t.Dev.ReadAt(p, off) }

// WriteAt implements Target.
func (t *RecordTarget) WriteAt(p []byte, off int64) (int, error) {
	if err := t.Dev.WriteAt(p, off, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Trim implements Target (a recorded DISCARD).
func (t *RecordTarget) Trim(off, n int64) error { return t.Dev.Discard(off, n) }

// WriteZeroes implements Target.
func (t *RecordTarget) WriteZeroes(off, n int64) error { return t.Dev.WriteZeroes(off, n, false) }

// Flush implements Target.
func (t *RecordTarget) Flush() error {
	if t.LieAboutFlush {
		return nil
	}
	return t.Dev.Flush()
}

// Size implements Target.
func (t *RecordTarget) Size() int64 { return t.Dev.Size() }

// Mark implements Marker.
func (t *RecordTarget) Mark(name string) error { return t.Dev.Recorder().Mark(name) }
