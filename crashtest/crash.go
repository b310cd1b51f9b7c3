package crashtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// BlockDevice is the block interface of a *record.Device. Crash.Device offers it over a crash
// image, so an engine written against it (or a subset) opens and recovers its own crash images
// with the code it runs in production.
type BlockDevice interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64, fua bool) error
	WriteZeroes(off, n int64, fua bool) error
	Discard(off, n int64) error
	Flush() error
	Size() int64
}

var _ BlockDevice = (*record.Device)(nil)

// Crash is one distinct crash state handed to Test.Check.
type Crash struct {
	// ID names the state: powercut replay --state ID rebuilds its images.
	ID    string
	Model model.Model
	// Reason describes the crash point ("before FLUSH op 12 completes").
	Reason string
	// Acked are the acknowledgements issued before the crash point, in log order: the
	// promises a recovered state must keep.
	Acked []record.Ack
	// LastMark is the last mark (ack or plain) issued before the crash point, "" if none.
	LastMark string

	cand   *explore.Candidate
	byName map[string][]uint64
	mu     sync.Mutex
	devs   map[int]*crashDevice
	found  Recovered
	viols  []explore.Violation
}

// Device returns a writable view of device i's crash image: writes (recovery's) land in
// memory, the image is never changed. Every call for the same i returns the same view, so a
// second open sees what the first recovery wrote.
func (c *Crash) Device(i int) BlockDevice {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.devs[i]; ok {
		return d
	}
	img, ok := c.cand.Images[uint16(i)]
	if !ok {
		panic(fmt.Sprintf("crashtest: no device %d in this recording", i))
	}
	d := &crashDevice{s: record.NewCOWStore(img, img.Size())}
	c.devs[i] = d
	return d
}

// Image returns device i's crash image, read-only.
func (c *Crash) Image(i int) io.ReaderAt { return c.cand.Images[uint16(i)] }

// Candidate is the explorer's view of the state (covered marks, per-sector rules), for checks
// that need more than the image and the acks.
func (c *Crash) Candidate() *explore.Candidate { return c.cand }

// Found says the recovered state contains the operations with these ordinals (as given to
// Workload.Ack): what the oracles compare with the promises.
func (c *Crash) Found(ordinals ...uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range ordinals {
		c.found[o] = true
	}
}

// FoundName says the recovered state contains every operation acknowledged under name (for
// engines that recover keys rather than ordinals).
func (c *Crash) FoundName(names ...string) {
	for _, n := range names {
		c.Found(c.byName[n]...)
	}
}

// Errorf reports a violation the engine's own invariant check found (oracle "check").
func (c *Crash) Errorf(format string, args ...any) {
	c.Violation("check", fmt.Sprintf(format, args...))
}

// Violation reports a violation under an oracle name of the caller's choosing.
func (c *Crash) Violation(oracle, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.viols = append(c.viols, explore.Violation{Oracle: oracle, Detail: detail})
}

// crashDevice is a BlockDevice over a copy-on-write store.
type crashDevice struct{ s *record.MemStore }

func (d *crashDevice) ReadAt(p []byte, off int64) (int, error) { return d.s.ReadAt(p, off) }
func (d *crashDevice) WriteAt(p []byte, off int64, _ bool) error {
	_, err := d.s.WriteAt(p, off)
	return err
}
func (d *crashDevice) WriteZeroes(off, n int64, _ bool) error { return d.s.Zero(off, n) }
func (d *crashDevice) Discard(off, n int64) error             { return d.s.Zero(off, n) }
func (d *crashDevice) Flush() error                           { return nil }
func (d *crashDevice) Size() int64                            { return d.s.Size() }

// checker adapts Test.Check and the oracles to explore.Checker.
type checker struct {
	check   func(*Crash) error
	oracles []Oracle
	// acks[k] is the k-th ack of the log, ackOp[k] its log index.
	acks   []record.Ack
	ackOp  []int
	byName map[string][]uint64
}

func newChecker(l *pclog.Log, check func(*Crash) error, oracles []Oracle) (*checker, error) {
	acks, idx := record.Acks(l)
	byName := map[string][]uint64{}
	seen := map[uint64]bool{}
	for _, a := range acks {
		if seen[a.Ordinal] {
			return nil, fmt.Errorf("%w: %d", record.ErrDuplicateAck, a.Ordinal)
		}
		seen[a.Ordinal] = true
		byName[a.Name] = append(byName[a.Name], a.Ordinal)
	}
	return &checker{check: check, oracles: oracles, acks: acks, ackOp: idx, byName: byName}, nil
}

// Reads implements explore.ContextReader: a verdict depends on the image and on the acks issued
// before the crash point, which the last mark determines (ack mark names are unique).
func (*checker) Reads() explore.Reads { return explore.ReadsLastMark }

// Cheap implements explore.Cheap: the check runs in process, so the first violation of each
// group is minimised by default.
func (*checker) Cheap() bool { return true }

// Check implements explore.Checker.
func (k *checker) Check(_ context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	// The acks issued before the crash point are those at or before its last mark.
	n := sort.SearchInts(k.ackOp, cand.Point.MarkOp+1)
	c := &Crash{ID: cand.ID, Model: cand.Model, Reason: cand.Reason, Acked: k.acks[:n:n], LastMark: cand.LastMark, cand: cand,
		byName: k.byName, devs: map[int]*crashDevice{}, found: Recovered{}}
	err := callCheck(k.check, c)
	if errors.Is(err, ErrCannotCheck) {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		return append(c.viols, explore.Violation{Oracle: "recover", Detail: err.Error()}), nil
	}
	p := &Promises{Acked: c.Acked, All: k.acks}
	for _, o := range k.oracles {
		for _, msg := range o.Check(p, c.found) {
			c.viols = append(c.viols, explore.Violation{Oracle: o.Name(), Detail: msg})
		}
	}
	return c.viols, nil
}

// callCheck runs check, turning a panic of the engine's recovery into an error (a violation):
// an engine that panics on a crash image is as broken as one that reports garbage.
func callCheck(check func(*Crash) error, c *Crash) (err error) {
	defer func() {
		if p := recover(); p != nil {
			st := strings.SplitN(string(debug.Stack()), "\n", 12)
			err = fmt.Errorf("panic: %v\n%s", p, strings.Join(st[:min(len(st), 11)], "\n"))
		}
	}()
	return check(c)
}
