// Package demo is powercut's built-in demonstration: a seeded workload on a Crucible-style raw
// extent (package extent), recorded in process, and the oracles that judge every crash state the
// explorer generates from the recording.
package demo

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"

	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// Config is a workload.
type Config struct {
	Profile extent.Profile
	Bug     extent.Bug
	Seed    uint64
	// Blocks in the extent; Writes issued in total.
	Blocks int64
	Writes int
	// FlushEvery: a flush after every 1..FlushEvery writes (drawn per flush).
	FlushEvery int
	// RewritePct: percent of writes that go to a block written since the last flush, so blocks
	// get several versions between flushes (what the bonus sync is for).
	RewritePct int
	// ReopenPct: percent of flushes followed by a reopen; half of the reopens skip the flush
	// first and so exercise the dirty open (rehash) on the live device.
	ReopenPct int
}

// DefaultConfig is the workload `powercut demo` runs: small enough to explore in seconds,
// big enough that every planted bug has a path to a bad state.
func DefaultConfig() Config {
	return Config{Profile: extent.ProfileHardened, Seed: 1, Blocks: 16, Writes: 48, FlushEvery: 5, RewritePct: 35, ReopenPct: 30}
}

func (c Config) options() extent.Options {
	return extent.Options{Profile: c.Profile, Bug: c.Bug, Blocks: c.Blocks}
}

// MarkExpect is what the workload knew at one mark.
type MarkExpect struct {
	// Owed[b] is the version of block b acknowledged by the flushes up to this mark: every crash
	// state after the mark must hold at least this version.
	Owed []uint32
	// Issued[b] is the newest version of block b issued before the next mark: no crash state
	// before the next mark can hold a newer one.
	Issued []uint32
	// Flush is the extent's flush number once the flush behind this mark was acknowledged.
	Flush uint64
}

// Expect is everything the oracles need from the workload, keyed by mark name ("" is the state
// before the first mark).
type Expect struct {
	Options extent.Options
	Seed    uint64
	Marks   map[string]*MarkExpect
	// Order lists the mark names in the order issued.
	Order []string
}

// Result describes a recorded run.
type Result struct {
	LogPath                                string
	Expect                                 *Expect
	Writes, Flushes, Reopens, DirtyReopens int
	Stats                                  extent.Stats
	// DeviceSize is the recorded device's size.
	DeviceSize int64
}

// MarkCreated is the mark issued once the extent's creation is acknowledged.
const MarkCreated = "created"

// DeviceID is the recorded device's id.
const DeviceID = 0

// Device is the device the workload of c runs on: sized and sectored for its extent.
func (c Config) Device() (pclog.Device, error) {
	lay, err := c.options().Layout()
	if err != nil {
		return pclog.Device{}, err
	}
	return pclog.Device{ID: DeviceID, Name: "extent", Size: roundUp(lay.Size, 4096), SectorSize: int(lay.SectorSize)}, nil
}

// Record runs the workload on a fresh extent in memory, recording every I/O to a pclog in dir.
func Record(dir string, c Config) (*Result, error) {
	dev, err := c.Device()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "demo.pclog")
	h := pclog.Header{Version: pclog.FormatVersion, Source: "in-process",
		Note:    fmt.Sprintf("powercut demo: %s extent, bug %s, seed %d", c.Profile, c.Bug, c.Seed),
		Devices: []pclog.Device{dev}}
	rec, err := record.Create(path, h, []record.Store{record.NewMemStore(dev.Size)})
	if err != nil {
		return nil, fmt.Errorf("demo: create recording: %w", err)
	}
	res, err := Drive(rec, c)
	if cerr := rec.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("demo: close recording: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	res.LogPath = path
	return res, nil
}

// Drive runs the workload of c on device DeviceID of rec (sized by Config.Device), which the
// caller created and closes: how a crash test (package crashtest) records the demo.
func Drive(rec *record.Recorder, c Config) (*Result, error) {
	res := &Result{DeviceSize: rec.Device(DeviceID).Size()}
	if err := run(rec, c, c.options(), res); err != nil {
		return nil, err
	}
	return res, nil
}

func run(rec *record.Recorder, c Config, opt extent.Options, res *Result) error {
	dev := rec.Device(DeviceID)
	ext, err := extent.Create(dev, opt)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	// The extent exists once its creation is acknowledged; before this mark an unformatted
	// device is an acceptable crash outcome.
	if err := rec.Mark(MarkCreated); err != nil {
		return fmt.Errorf("demo: mark %s: %w", MarkCreated, err)
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x706f776572637574))
	n := c.Blocks
	version := make([]uint32, n) // newest version issued per block
	owed := make([]uint32, n)    // newest version acknowledged by a flush
	x := &Expect{Options: opt, Seed: c.Seed, Marks: map[string]*MarkExpect{}}
	x.Marks[""] = &MarkExpect{Owed: make([]uint32, n), Issued: make([]uint32, n)}
	cur := &MarkExpect{Owed: make([]uint32, n)}
	x.Marks[MarkCreated] = cur
	x.Order = append(x.Order, MarkCreated)
	var stats extent.Stats
	addStats := func(s extent.Stats) {
		stats.Writes += s.Writes
		stats.Flushes += s.Flushes
		stats.Syncs += s.Syncs
		stats.BonusSyncs += s.BonusSyncs
		stats.Defrags += s.Defrags
	}
	var sinceFlush []int64
	untilFlush := 1 + rng.IntN(c.FlushEvery)
	flushNo := uint64(0)
	for w := 0; w < c.Writes; w++ {
		b := rng.Int64N(n)
		if len(sinceFlush) > 0 && rng.IntN(100) < c.RewritePct {
			b = sinceFlush[rng.IntN(len(sinceFlush))]
		}
		version[b]++
		if err := ext.Write(b, BlockData(c.Seed, b, version[b], int(ext.BlockSize()))); err != nil {
			return fmt.Errorf("demo: write %d: %w", w, err)
		}
		res.Writes++
		sinceFlush = append(sinceFlush, b)
		untilFlush--
		if untilFlush > 0 && w < c.Writes-1 {
			continue
		}
		untilFlush = 1 + rng.IntN(c.FlushEvery)
		reopen := rng.IntN(100) < c.ReopenPct
		if reopen && rng.IntN(2) == 0 {
			// A restart without a flush: the next open finds the extent dirty and rehashes.
			addStats(ext.Stats)
			if ext, err = extent.Open(dev, opt, true); err != nil {
				return fmt.Errorf("demo: dirty reopen after write %d: %w", w, err)
			}
			res.Reopens++
			res.DirtyReopens++
			reopen = false
		}
		flushNo++
		if err := ext.Flush(flushNo); err != nil {
			return fmt.Errorf("demo: flush %d: %w", flushNo, err)
		}
		res.Flushes++
		copy(owed, version)
		sinceFlush = sinceFlush[:0]
		name := fmt.Sprintf("flush-%d", flushNo)
		cur.Issued = append([]uint32(nil), version...)
		cur = &MarkExpect{Owed: append([]uint32(nil), owed...), Flush: ext.FlushNumber()}
		x.Marks[name] = cur
		x.Order = append(x.Order, name)
		if err := rec.Mark(name); err != nil {
			return fmt.Errorf("demo: mark %s: %w", name, err)
		}
		if reopen {
			addStats(ext.Stats)
			if ext, err = extent.Open(dev, opt, true); err != nil {
				return fmt.Errorf("demo: reopen after %s: %w", name, err)
			}
			res.Reopens++
		}
	}
	cur.Issued = append([]uint32(nil), version...)
	addStats(ext.Stats)
	res.Stats = stats
	res.Expect = x
	return nil
}

func roundUp(x, a int64) int64 { return (x + a - 1) / a * a }

// blockMagic starts every block the workload writes; a block of zeros is version 0.
var blockMagic = [8]byte{'P', 'C', 'D', 'E', 'M', 'O', 'v', '1'}

// BlockData is the content of version v of block b: a header naming the block and the version
// (so the oracles read versions back from a crash image) and filler that differs per version.
func BlockData(seed uint64, b int64, v uint32, size int) []byte {
	p := make([]byte, size)
	copy(p, blockMagic[:])
	binary.LittleEndian.PutUint64(p[8:], uint64(b))
	binary.LittleEndian.PutUint32(p[16:], v)
	r := rand.New(rand.NewPCG(seed^uint64(b)<<32, uint64(v)))
	for i := 24; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	return p
}

// ParseBlock returns the version a block's data holds: 0 for zeros, an error for data that is
// not a version of block b.
func ParseBlock(p []byte, b int64) (uint32, error) {
	if [8]byte(p[:8]) != blockMagic {
		for _, c := range p {
			if c != 0 {
				return 0, fmt.Errorf("block %d holds data the workload never wrote", b)
			}
		}
		return 0, nil
	}
	if got := int64(binary.LittleEndian.Uint64(p[8:])); got != b {
		return 0, fmt.Errorf("block %d holds data written for block %d", b, got)
	}
	return binary.LittleEndian.Uint32(p[16:]), nil
}
