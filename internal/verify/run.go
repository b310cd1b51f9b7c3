package verify

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Policy says what a run expects of blocks it inherits from a previous run (--track).
type Policy int

const (
	// PolicyCompleted: every block holds its last written version (the previous run ended cleanly,
	// or the target never lost power).
	PolicyCompleted Policy = iota
	// PolicyFlushed: a power cut happened; a block may hold any version between the one covered by
	// its last completed flush and the last one written.
	PolicyFlushed
)

// ParsePolicy parses "completed" or "flushed".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "completed", "":
		return PolicyCompleted, nil
	case "flushed":
		return PolicyFlushed, nil
	}
	return 0, fmt.Errorf("unknown policy %q (want completed or flushed)", s)
}

func (p Policy) String() string {
	if p == PolicyFlushed {
		return "flushed"
	}
	return "completed"
}

// Mix is the percentage of reads, writes, trims and write-zeroes.
type Mix struct{ R, W, T, Z int }

// Modes lists the --rw values.
var Modes = []string{"read", "write", "randread", "randwrite", "rw", "randrw", "trim", "randtrim", "randrwt", "writetrim"}

// ModeMix returns the default mix of a mode and whether it walks the region sequentially.
func ModeMix(mode string) (Mix, bool, error) {
	switch mode {
	case "read":
		return Mix{R: 100}, true, nil
	case "write":
		return Mix{W: 100}, true, nil
	case "randread":
		return Mix{R: 100}, false, nil
	case "randwrite":
		return Mix{W: 100}, false, nil
	case "rw":
		return Mix{R: 50, W: 50}, true, nil
	case "randrw":
		return Mix{R: 50, W: 50}, false, nil
	case "trim":
		return Mix{T: 100}, true, nil
	case "randtrim":
		return Mix{T: 100}, false, nil
	case "randrwt":
		return Mix{R: 40, W: 40, T: 20}, false, nil
	case "writetrim":
		// Sequential: each block is written, then trimmed.
		return Mix{W: 50, T: 50}, true, nil
	}
	return Mix{}, false, fmt.Errorf("%w %q (want one of %s)", ErrUnknownMode, mode, strings.Join(Modes, ", "))
}

// Sentinel errors of the workload's configuration (wrapped with the details).
var (
	ErrUnknownMode   = errors.New("unknown workload mode")
	ErrBadMix        = errors.New("bad operation mix")
	ErrTrackRequired = errors.New("no expectations to verify")
)

// ParseMix parses "R,W,T" or "R,W,T,Z" percentages summing to 100.
func ParseMix(s string) (Mix, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 3 || len(parts) > 4 {
		return Mix{}, fmt.Errorf("%w %q: want R,W,T or R,W,T,Z percentages", ErrBadMix, s)
	}
	var v [4]int
	sum := 0
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 100 {
			return Mix{}, fmt.Errorf("%w %q: %q is not a percentage", ErrBadMix, s, p)
		}
		v[i] = n
		sum += n
	}
	if sum != 100 {
		return Mix{}, fmt.Errorf("%w %q: percentages sum to %d, want 100", ErrBadMix, s, sum)
	}
	return Mix{R: v[0], W: v[1], T: v[2], Z: v[3]}, nil
}

// Config is one verify run.
type Config struct {
	BlockSize int64
	Offset    int64
	Size      int64 // 0: to the end of the target
	Mode      string
	Mix       *Mix // overrides the mode's mix
	IODepth   int
	Ops       int64 // 0: one pass over the region (or unlimited with Runtime)
	Runtime   time.Duration
	Seed      uint64
	// FsyncEvery flushes after every N writes (0: only at the end).
	FsyncEvery int64
	Policy     Policy
	TrimZeroes bool
	// TrackFile loads (and deletes) expectations at the start and saves them at the end.
	TrackFile     string
	TrackRequired bool
	// VerifyAll reads back and verifies every tracked block after the workload.
	VerifyAll bool
	DumpDir   string
	// DumpName is the target basename used in dump file names.
	DumpName    string
	TargetName  string
	MaxFailures int
	// RunID of a fresh run (0: random).
	RunID uint64
	// OnFailure is called for each bad block as it is found (optional).
	OnFailure func(Failure)
	// NoFinalFlush skips the flush at the end (to simulate a crash right after the workload).
	NoFinalFlush bool
}

// Result summarises a run.
type Result struct {
	RunID        string        `json:"run_id"`
	Blocks       int64         `json:"blocks"`
	BlockSize    int64         `json:"block_size"`
	Reads        int64         `json:"reads"`
	Writes       int64         `json:"writes"`
	Trims        int64         `json:"trims"`
	Zeroes       int64         `json:"write_zeroes"`
	Flushes      int64         `json:"flushes"`
	Verified     int64         `json:"verified_blocks"`
	BytesRead    int64         `json:"bytes_read"`
	BytesWritten int64         `json:"bytes_written"`
	Elapsed      time.Duration `json:"elapsed_ns"`
	Failures     []Failure     `json:"failures"`
	FailureCount int64         `json:"failure_count"`
	TrackLoaded  bool          `json:"track_loaded"`
	TrackSaved   bool          `json:"track_saved"`
	// TrackingBytesPerBlock is the memory the tracking table costs per block.
	TrackingBytesPerBlock int `json:"tracking_bytes_per_block"`
	// TargetError is set when the target failed (the run stopped; in-flight blocks are marked
	// uncertain in the saved track file).
	TargetError string `json:"target_error,omitempty"`
}

// ErrTarget wraps a failure of the target itself (I/O error, lost connection).
var ErrTarget = errors.New("target failed")

type opKind int

const (
	opRead opKind = iota
	opWrite
	opTrim
	opZero
)

type runner struct {
	cfg     Config
	t       Target
	tab     *table
	chk     checker
	nblocks int64
	mix     Mix
	seq     bool
	locks   []sync.Mutex

	issued atomic.Int64
	writes atomic.Int64 // for fsync-every

	// dirty holds (block<<versionBits | version, kind) of operations completed since the last
	// flush was submitted; only kept when flushes happen during the run.
	dmu   sync.Mutex
	dirty []dirtyOp
	fmu   sync.Mutex // one flush at a time

	res      Result
	rmu      sync.Mutex
	failures atomic.Int64
	stop     context.CancelFunc
	terr     error
	terrOnce sync.Once
	marker   Marker
	flushN   atomic.Int64
}

type dirtyOp struct {
	block   int64
	version uint64
	kind    int
}

// Run runs the workload on t and returns its result. The error is nil when the run completed
// (with or without verification failures: see Result.FailureCount); ErrTarget-wrapped when the
// target failed; another error for usage problems (bad geometry, track file).
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	cfg, size, mix, seq, err := cfg.resolve(t)
	if err != nil {
		return nil, err
	}
	bs := cfg.BlockSize
	r := &runner{cfg: cfg, t: t, nblocks: size / bs, mix: mix, seq: seq}
	r.res.Blocks, r.res.BlockSize, r.res.TrackingBytesPerBlock = r.nblocks, bs, 8
	if m, ok := t.(Marker); ok {
		r.marker = m
	}

	id := Identity{Size: size, BlockSize: bs, Offset: cfg.Offset, Target: cfg.TargetName}
	if err := r.loadTrack(&id); err != nil {
		return nil, err
	}
	r.chk = checker{runID: id.RunID, bs: bs, trimZeroes: cfg.TrimZeroes}
	r.res.RunID = fmt.Sprintf("%016x", id.RunID)
	nl := min(r.nblocks, 4096)
	r.locks = make([]sync.Mutex, nl)

	ops := cfg.Ops
	if ops == 0 && cfg.Runtime == 0 {
		ops = r.nblocks
		if cfg.Mode == "writetrim" {
			ops *= 2
		}
	}
	if cfg.Runtime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Runtime)
		defer cancel()
	}
	wctx, stop := context.WithCancel(ctx)
	r.stop = stop
	defer stop()

	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.IODepth; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r.worker(wctx, w, ops)
		}(w)
	}
	wg.Wait()

	if r.terr == nil && !cfg.NoFinalFlush && r.res.Writes+r.res.Trims+r.res.Zeroes > 0 {
		r.flush(true)
	}
	if r.terr == nil && cfg.VerifyAll && ctx.Err() == nil {
		r.verifyAll(ctx)
	}
	r.res.Elapsed = time.Since(start)
	r.res.FailureCount = r.failures.Load()

	if cfg.TrackFile != "" {
		id.Crashed = r.terr != nil
		if err := saveTrack(cfg.TrackFile, id, r.tab); err != nil {
			return &r.res, err
		}
		r.res.TrackSaved = true
	}
	if r.terr != nil {
		r.res.TargetError = r.terr.Error()
		return &r.res, fmt.Errorf("%w: %w", ErrTarget, r.terr)
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return &r.res, err
	}
	return &r.res, nil
}

// resolve fills in the defaults of cfg and checks the region against t: the block size, the
// region's size, the operation mix.
func (cfg Config) resolve(t Target) (Config, int64, Mix, bool, error) {

	if cfg.BlockSize == 0 {
		cfg.BlockSize = 4096
	}
	bs := cfg.BlockSize
	if bs < 512 || bs%512 != 0 || bs/512 > 65535 {
		return cfg, 0, Mix{}, false, fmt.Errorf("block size %d: must be a multiple of 512 between 512 and 32 MiB", bs)
	}
	if cfg.Offset < 0 || cfg.Offset%bs != 0 {
		return cfg, 0, Mix{}, false, fmt.Errorf("offset %d is not a multiple of the block size %d", cfg.Offset, bs)
	}
	size := cfg.Size
	if size == 0 {
		size = (t.Size() - cfg.Offset) / bs * bs
	}
	if size <= 0 || size%bs != 0 {
		return cfg, 0, Mix{}, false, fmt.Errorf("size %d is not a positive multiple of the block size %d", size, bs)
	}
	if cfg.Offset+size > t.Size() {
		return cfg, 0, Mix{}, false, fmt.Errorf("region [%d,+%d) extends past the end of the %d-byte target", cfg.Offset, size, t.Size())
	}
	if cfg.Mode == "" {
		cfg.Mode = "randrw"
	}
	mix, seq, err := ModeMix(cfg.Mode)
	if err != nil {
		return cfg, 0, Mix{}, false, err
	}
	if cfg.Mix != nil {
		mix = *cfg.Mix
	}
	if cfg.IODepth <= 0 {
		cfg.IODepth = 1
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 100
	}
	if cfg.DumpName == "" {
		cfg.DumpName = "target"
	}
	return cfg, size, mix, seq, nil
}

// loadTrack loads the expectations of an earlier run (deleting the file: it no longer describes
// the target once this run writes), or starts a new table with a new run ID.
func (r *runner) loadTrack(id *Identity) error {
	cfg, size, bs := r.cfg, id.Size, id.BlockSize
	if cfg.TrackFile != "" {
		lid, tab, err := loadTrack(cfg.TrackFile)
		switch {
		case errors.Is(err, ErrNoTrack):
			if cfg.TrackRequired {
				return fmt.Errorf("%w: a track file is required and %w (it is written at the clean end of a tracked run and deleted when a run loads it)", ErrTrackRequired, err)
			}
		case err != nil:
			return err
		default:
			if lid.Size != size || lid.BlockSize != bs || lid.Offset != cfg.Offset {
				return fmt.Errorf("track file %s describes a different region (size %d, block size %d, offset %d) than this run (size %d, block size %d, offset %d); use the same size, block size and offset, or delete the file",
					cfg.TrackFile, lid.Size, lid.BlockSize, lid.Offset, size, bs, cfg.Offset)
			}
			// Deleted before any I/O: if this run dies, no file claims to know the target.
			if err := os.Remove(cfg.TrackFile); err != nil {
				return fmt.Errorf("delete track file after loading it: %w", err)
			}
			id.RunID = lid.RunID
			r.tab = tab
			r.res.TrackLoaded = true
			if cfg.Policy == PolicyFlushed {
				for i := range r.tab.w {
					w := r.tab.get(int64(i))
					if w.last() != 0 {
						r.tab.set(int64(i), w|bitU)
					}
				}
			}
		}
	}
	if r.tab == nil {
		r.tab = newTable(r.nblocks)
		id.RunID = cfg.RunID
		for id.RunID == 0 {
			var b [8]byte
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("run ID: %w", err)
			}
			id.RunID = binary.LittleEndian.Uint64(b[:])
		}
	}
	return nil
}

// rng is wyrand: small, fast, good enough to pick blocks and operations.
type rng uint64

func (s *rng) next() uint64 {
	*s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(uint64(*s), uint64(*s)^0xe7037ed1a0b428db)
	return hi ^ lo
}

func (s *rng) intn(n int64) int64 {
	hi, _ := bits.Mul64(s.next(), uint64(n))
	return int64(hi)
}

func (r *runner) pickOp(g *rng, n int64) (opKind, int64) {
	if r.cfg.Mode == "writetrim" && r.cfg.Mix == nil {
		if n%2 == 0 {
			return opWrite, n / 2 % r.nblocks
		}
		return opTrim, n / 2 % r.nblocks
	}
	var b int64
	if r.seq {
		b = n % r.nblocks
	} else {
		b = g.intn(r.nblocks)
	}
	p := int(g.intn(100))
	switch {
	case p < r.mix.R:
		return opRead, b
	case p < r.mix.R+r.mix.W:
		return opWrite, b
	case p < r.mix.R+r.mix.W+r.mix.T:
		return opTrim, b
	}
	return opZero, b
}

func (r *runner) worker(ctx context.Context, id int, ops int64) {
	g := rng(r.cfg.Seed*0x9e3779b97f4a7c15 + uint64(id+1)*0xd1b54a32d192ed03)
	buf := alignedBuf(int(r.cfg.BlockSize))
	for ctx.Err() == nil {
		n := r.issued.Add(1) - 1
		if ops > 0 && n >= ops {
			return
		}
		kind, b := r.pickOp(&g, n)
		if err := r.op(kind, b, buf); err != nil {
			r.targetFailed(err)
			return
		}
	}
}

func (r *runner) targetFailed(err error) {
	r.terrOnce.Do(func() { r.terr = err })
	r.stop()
}

func (r *runner) off(b int64) int64 { return r.cfg.Offset + b*r.cfg.BlockSize }

// op performs one operation on block b with the block's lock held.
func (r *runner) op(kind opKind, b int64, buf []byte) error {
	l := &r.locks[b%int64(len(r.locks))]
	l.Lock()
	defer l.Unlock()
	off, bs := r.off(b), r.cfg.BlockSize
	w := r.tab.get(b)
	if kind == opRead {
		if _, err := r.t.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read block at 0x%x: %w", off, err)
		}
		atomic.AddInt64(&r.res.Reads, 1)
		atomic.AddInt64(&r.res.BytesRead, bs)
		r.verify(buf, b, w)
		return nil
	}
	v := w.last() + 1
	if v > MaxVersion {
		return fmt.Errorf("block at 0x%x reached the version limit %d; start a new run without the track file", off, MaxVersion)
	}
	var err error
	k := kindData
	switch kind {
	case opWrite:
		makeBlock(buf, r.chk.runID, off, v)
		_, err = r.t.WriteAt(buf, off)
		atomic.AddInt64(&r.res.Writes, 1)
		atomic.AddInt64(&r.res.BytesWritten, bs)
	case opTrim:
		k = kindTrim
		err = r.t.Trim(off, bs)
		atomic.AddInt64(&r.res.Trims, 1)
	case opZero:
		k = kindZeroes
		err = r.t.WriteZeroes(off, bs)
		atomic.AddInt64(&r.res.Zeroes, 1)
	}
	// The block is uncertain when the operation failed: it may or may not have reached the media.
	r.tab.update(b, func(w Word) Word { return w.advance(v, k, err == nil) })
	if err != nil {
		return fmt.Errorf("%s block at 0x%x: %w", [...]string{"read", "write", "trim", "write zeroes"}[kind], off, err)
	}
	if r.cfg.FsyncEvery > 0 {
		r.dmu.Lock()
		r.dirty = append(r.dirty, dirtyOp{b, v, k})
		r.dmu.Unlock()
		if r.writes.Add(1)%r.cfg.FsyncEvery == 0 {
			// Flushing with the block lock held would only delay this one block; release it
			// first so that the flush never waits for our lock.
			l.Unlock()
			ferr := r.flush(false)
			l.Lock()
			return ferr
		}
	}
	return nil
}

// flush submits a FLUSH and, once it completed, records that every operation completed before
// its submission is durable. final: nothing is in flight, every block's last version is covered.
func (r *runner) flush(final bool) error {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	n := r.flushN.Add(1)
	r.dmu.Lock()
	covered := r.dirty
	r.dirty = nil
	r.dmu.Unlock()
	if r.marker != nil {
		if err := r.marker.Mark(fmt.Sprintf("verify-flush-%d-begin", n)); err != nil {
			r.putBack(covered)
			r.targetFailed(fmt.Errorf("mark before flush: %w", err))
			return err
		}
	}
	if err := r.t.Flush(); err != nil {
		r.putBack(covered)
		err = fmt.Errorf("flush: %w", err)
		r.targetFailed(err)
		return err
	}
	atomic.AddInt64(&r.res.Flushes, 1)
	if r.marker != nil {
		if err := r.marker.Mark(fmt.Sprintf("verify-flush-%d-done", n)); err != nil {
			r.targetFailed(fmt.Errorf("mark after flush: %w", err))
			return err
		}
	}
	if final {
		for i := range r.tab.w {
			// An uncertain block (inherited under --policy flushed, or whose last operation
			// failed) holds some version we do not know: the flush makes that one durable.
			r.tab.update(int64(i), func(w Word) Word {
				if w.uncertain() {
					return w
				}
				return w.flushed(w.last(), w.kind())
			})
		}
		return nil
	}
	for _, d := range covered {
		r.tab.update(d.block, func(w Word) Word { return w.flushed(d.version, d.kind) })
	}
	return nil
}

func (r *runner) putBack(ops []dirtyOp) {
	r.dmu.Lock()
	r.dirty = append(ops, r.dirty...)
	r.dmu.Unlock()
}

// verify checks buf (block b as read) against its expectation w and records a failure.
func (r *runner) verify(buf []byte, b int64, w Word) {
	atomic.AddInt64(&r.res.Verified, 1)
	off := r.off(b)
	class, detail := r.chk.check(buf, off, w)
	if class == "" {
		return
	}
	n := r.failures.Add(1)
	if n > int64(r.cfg.MaxFailures) {
		r.stop()
		return
	}
	f := Failure{Offset: off, Class: class, Detail: detail}
	if r.cfg.DumpDir != "" {
		paths, err := r.chk.dump(r.cfg.DumpDir, r.cfg.DumpName, off, buf, w, class, detail)
		if err != nil {
			f.Detail += fmt.Sprintf(" (dump failed: %v)", err)
		}
		f.Dumps = paths
	}
	r.rmu.Lock()
	r.res.Failures = append(r.res.Failures, f)
	r.rmu.Unlock()
	if r.cfg.OnFailure != nil {
		r.cfg.OnFailure(f)
	}
	if n == int64(r.cfg.MaxFailures) {
		r.stop()
	}
}

// verifyAll reads every block the table knows about.
func (r *runner) verifyAll(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < r.cfg.IODepth; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := alignedBuf(int(r.cfg.BlockSize))
			for ctx.Err() == nil && r.failures.Load() < int64(r.cfg.MaxFailures) {
				b := next.Add(1) - 1
				if b >= r.nblocks {
					return
				}
				if r.tab.get(b).last() == 0 {
					continue
				}
				if err := r.op(opRead, b, buf); err != nil {
					r.targetFailed(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
