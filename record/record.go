// Package record is powercut's in-process recording API: a Recorder owns one pclog and the global
// sequence shared by all its devices; a Device wraps a backing Store and records every operation
// issued on it, from any number of goroutines, with the submit and completion sequence numbers
// taken around the real call.
//
// Why around the real call: the durability model needs to know which writes completed before a
// FLUSH was submitted (covered) and which were still in flight (not covered). Submit is taken
// before the store sees the request, completion after it returned, and the record is appended to
// the log under the same lock that assigns the completion number, so file order is completion
// order. A FLUSH or FUA record is synced to stable storage before the call returns, so an
// acknowledged flush is never lost by a crash of the recorder.
//
// Frontends (NBD, FUSE) use Begin/Complete directly; Go programs use Device's methods.
package record

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/powercut/powercut/pclog"
)

// ErrStopped is returned for every operation after the recorder was stopped by a fault trigger
// (see FailAfter): the workload sees the power cut.
var ErrStopped = errors.New("powercut: device stopped (simulated power cut)")

// Recorder records one recording.
type Recorder struct {
	mu   sync.Mutex
	seq  atomic.Uint64 // last sequence number handed out
	w    *pclog.Writer
	devs map[uint16]*Device

	// fault injection
	failAfterOps  uint64 // 0: off; else the number of operations allowed before the cut
	failAfterMark string
	ops           uint64
	stopped       atomic.Bool
	// SyncEvery, when set, fsyncs the log after every record (slow; for tests of the log itself).
	SyncEvery bool
	closed    bool
	st        stacks
	path      string
	pending   atomic.Int64 // operations submitted with Device.Submit and not waited for
	acked     map[uint64]bool
}

// Create starts a recording at path. Devices are created from the header's device list with the
// given stores (same order as h.Devices).
func Create(path string, h pclog.Header, stores []Store) (*Recorder, error) {
	if len(stores) != len(h.Devices) {
		return nil, fmt.Errorf("record: %d devices but %d stores", len(h.Devices), len(stores))
	}
	for i, d := range h.Devices {
		if stores[i].Size() < d.Size {
			return nil, fmt.Errorf("record: store of device %d (%s) has %d bytes, device needs %d", d.ID, d.Name, stores[i].Size(), d.Size)
		}
	}
	w, err := pclog.Create(path, h)
	if err != nil {
		return nil, err
	}
	r := &Recorder{w: w, devs: map[uint16]*Device{}, path: path}
	for i, d := range h.Devices {
		r.devs[d.ID] = &Device{r: r, info: d, store: stores[i]}
	}
	return r, nil
}

// Header returns the recording's header.
func (r *Recorder) Header() pclog.Header { return r.w.Header() }

// Device returns the device with id.
func (r *Recorder) Device(id uint16) *Device { return r.devs[id] }

// Records returns the number of records written so far.
func (r *Recorder) Records() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Records()
}

// FailAfter arms the power-cut trigger: after n operations (n > 0) every later operation fails
// with ErrStopped and is not recorded.
func (r *Recorder) FailAfter(n uint64) {
	r.mu.Lock()
	r.failAfterOps = n
	r.mu.Unlock()
}

// FailAfterMark arms the trigger on a mark: once a mark with this name was recorded, every later
// operation fails.
func (r *Recorder) FailAfterMark(name string) {
	r.mu.Lock()
	r.failAfterMark = name
	r.mu.Unlock()
}

// Stopped reports whether the power-cut trigger fired.
func (r *Recorder) Stopped() bool { return r.stopped.Load() }

// Begin takes a submit sequence number. It fails once the trigger fired.
func (r *Recorder) Begin() (uint64, error) {
	if r.stopped.Load() {
		return 0, ErrStopped
	}
	return r.seq.Add(1), nil
}

// Complete takes the completion sequence number for rec (whose Submit must come from Begin),
// appends it to the log, and syncs the log when rec is a FLUSH, FUA or PREFLUSH operation.
// An error means the operation must be failed to the client: it is not in the log.
func (r *Recorder) Complete(rec *pclog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("record: recorder closed")
	}
	if r.stopped.Load() {
		return ErrStopped
	}
	rec.Complete = r.seq.Add(1)
	if rec.Kind == pclog.KindMark {
		rec.Submit = rec.Complete
	}
	if err := r.w.Append(rec); err != nil {
		return err
	}
	durable := rec.Kind == pclog.KindFlush || rec.Flags&(pclog.FlagFUA|pclog.FlagPreflush) != 0
	if durable || r.SyncEvery {
		if err := r.w.Sync(); err != nil {
			// The client will see this operation fail: the log must not keep it (a FLUSH
			// left in the log would make every earlier write durable in every crash state).
			if uerr := r.w.Unappend(); uerr != nil {
				return fmt.Errorf("%w; and %v", err, uerr)
			}
			return err
		}
	}
	r.appended(rec.Submit, int(r.w.Records())-1)
	r.ops++
	if r.failAfterOps > 0 && r.ops >= r.failAfterOps {
		r.stop()
	}
	if rec.Kind == pclog.KindMark && r.failAfterMark != "" && rec.Name == r.failAfterMark {
		r.stop()
	}
	return nil
}

func (r *Recorder) stop() {
	if !r.stopped.Swap(true) {
		_ = r.w.Sync()
	}
}

// Mark records a named mark at the current point of the global order.
func (r *Recorder) Mark(name string) error {
	if name == "" {
		return errors.New("record: empty mark name")
	}
	if len(name) > 4096 {
		return fmt.Errorf("record: mark name of %d bytes is too long (max 4096)", len(name))
	}
	if r.stopped.Load() {
		return ErrStopped
	}
	return r.Complete(&pclog.Record{Kind: pclog.KindMark, Device: r.firstDevice(), Name: name})
}

func (r *Recorder) firstDevice() uint16 { return r.w.Header().Devices[0].ID }

// Sync makes every record so far durable.
func (r *Recorder) Sync() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Sync()
}

// Close syncs and closes the log. Stores are not closed (they belong to the caller).
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	serr := r.writeStacks(r.path)
	if err := r.w.Close(); err != nil {
		return err
	}
	if n := r.pending.Load(); n > 0 && serr == nil {
		serr = fmt.Errorf("%w: %d", ErrNotCompleted, n)
	}
	return serr
}

// Seq returns the last sequence number handed out (for tests that force interleavings).
func (r *Recorder) Seq() uint64 { return r.seq.Load() }
