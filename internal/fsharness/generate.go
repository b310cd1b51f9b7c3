package fsharness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/fuserec"
	"github.com/powercut/powercut/internal/infra"
	"github.com/powercut/powercut/internal/leftovers"
	"github.com/powercut/powercut/internal/scratch"
	"github.com/powercut/powercut/pclog"
)

// WorkloadsDir is the directory inside GenConfig.Out that keeps the recordings of the workloads
// with violations (all of them with GenConfig.KeepLogs).
const WorkloadsDir = "workloads"

// GenConfig describes a run of generated workloads (powercut fs --generate / --workload-id).
type GenConfig struct {
	// FS is ext4, xfs or btrfs; Size, MkfsOpts and MountOpts as in Config.
	FS                  string
	Size                int64
	MkfsOpts, MountOpts string
	// Seq is the sequence length of the generated set (1..fsgen.MaxSeq); Gen the generator's
	// options. Ignored when IDs is set.
	Seq int
	Gen fsgen.Options
	// IDs, when set, runs exactly these workloads (fsgen.ParseID), in this order.
	IDs []string
	// Limit runs at most this many valid workloads (0: all). With Shuffle they are a subset
	// drawn with Seed; without, the first ones in generation order.
	Limit   int
	Shuffle bool
	Seed    uint64
	// Jobs is the number of workloads recorded and checked in parallel (default 1). The states
	// of one workload are checked one after the other.
	Jobs int
	// Explore selects model, strategy and bounds for every workload (its Jobs is ignored); its
	// Shard selects this shard's workloads (shardWorkloads), each then explored whole.
	Explore explore.Options
	// Out keeps base.img and the recordings of workloads with violations (created if missing;
	// empty: a new temporary directory).
	Out string
	// KeepLogs keeps every workload's recording, not only the violating ones'.
	KeepLogs bool
	// CheckTimeout bounds each fsck (0: none).
	CheckTimeout time.Duration
	// Log receives progress lines (default io.Discard).
	Log io.Writer
	// OnWorkload is called for each workload, in selection order, as soon as it and every earlier
	// one are done (never concurrently).
	OnWorkload func(*WorkloadResult)
}

// WorkloadResult is what happened to one workload.
type WorkloadResult struct {
	Index    int             `json:"index"`
	ID       string          `json:"id"`
	Workload *fsgen.Workload `json:"-"`
	// Failed is set when an operation of the workload failed on the file system under test:
	// the workload is reported as failed, never as a crash bug.
	Failed string `json:"failed,omitempty"`
	// Log is the recording, when kept.
	Log    string          `json:"log,omitempty"`
	Ops    int             `json:"recorded_ops"`
	Report *explore.Report `json:"report,omitempty"`
	Times  PhaseTimes      `json:"times"`
}

// GenResult sums a run over its workloads.
type GenResult struct {
	Out  string `json:"out"`
	Base string `json:"base"`
	FS   string `json:"fs"`
	// Selected workloads (after Limit); Dropped by tmpfs validation; Failed on the file system
	// under test; Ran = recorded and explored.
	Selected   int               `json:"selected"`
	Dropped    []DroppedWorkload `json:"dropped,omitempty"`
	Failed     int               `json:"failed"`
	Ran        int               `json:"ran"`
	States     int               `json:"states"`
	Checked    int               `json:"checked"`
	Violations int               `json:"violations"`
	BadStates  int               `json:"bad_states"`
	ByOracle   map[string]int    `json:"violations_by_class,omitempty"`
	Times      PhaseTimes        `json:"times"`
	Wall       time.Duration     `json:"wall_ns"`
	Workloads  []*WorkloadResult `json:"workloads"`
	phases     *Phases
	mu         sync.Mutex
	pending    map[int]*WorkloadResult
	next       int
	onWorkload func(*WorkloadResult)
}

// DroppedWorkload is a workload tmpfs validation rejected, and why.
type DroppedWorkload struct {
	ID  string `json:"id"`
	Err string `json:"error"`
}

// Rate is the workloads recorded and explored per second of wall time.
func (r *GenResult) Rate() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Ran) / r.Wall.Seconds()
}

// ErrNothingRan is returned (wrapped) when no workload was recorded and explored: all were
// dropped or failed, or none was selected.
var ErrNothingRan = errors.New("no workload ran")

func (c *GenConfig) validate() error {
	cfg := Config{FS: c.FS, Size: c.Size, Workload: "generated"}
	if err := cfg.validate(); err != nil {
		return err
	}
	c.Size = cfg.Size
	if _, err := exec.LookPath("mkfs." + c.FS); err != nil {
		return err
	}
	if len(c.IDs) == 0 && (c.Seq < 1 || c.Seq > fsgen.MaxSeq) {
		return fmt.Errorf("sequence length %d out of range 1..%d", c.Seq, fsgen.MaxSeq)
	}
	if c.Jobs < 1 {
		c.Jobs = 1
	}
	if c.FS == "btrfs" && c.Jobs > 1 && !btrfsTempFsid() {
		// Every copy of the base carries the same fsid; before Linux 6.7 the kernel refuses to
		// mount a second one at the same time.
		c.Jobs = 1
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// btrfsTempFsid reports whether the kernel mounts cloned single-device btrfs images side by side
// (temp-fsid, Linux 6.7).
func btrfsTempFsid() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	f := strings.FieldsFunc(rel, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return false
	}
	maj, _ := strconv.Atoi(f[0])
	mnr, _ := strconv.Atoi(f[1])
	return maj > 6 || maj == 6 && mnr >= 7
}

// mountOpts are the options of every mount of a generated run: the user's, plus nouuid on xfs
// so that parallel jobs can mount copies of the same base (same UUID) at once.
func (c *GenConfig) mountOpts() string {
	return (&Config{FS: c.FS, MountOpts: c.MountOpts}).checkMountOpts()
}

// SelectWorkloads returns the workloads a configuration names, before validation: the IDs, or
// the generated set (shuffled with Seed when Shuffle is set).
func SelectWorkloads(c GenConfig) ([]*fsgen.Workload, error) {
	if len(c.IDs) > 0 {
		ws := make([]*fsgen.Workload, 0, len(c.IDs))
		for _, id := range c.IDs {
			w, err := fsgen.ParseID(id)
			if err != nil {
				return nil, err
			}
			ws = append(ws, w)
		}
		return ws, nil
	}
	ws, err := fsgen.Generate(c.Seq, c.Gen)
	if err != nil {
		return nil, err
	}
	if c.Shuffle {
		r := rand.New(rand.NewPCG(c.Seed, 0x706f77657263757))
		r.Shuffle(len(ws), func(i, j int) { ws[i], ws[j] = ws[j], ws[i] })
	}
	return ws, nil
}

// RunGenerated records every selected workload from the same base image (mkfs once,
// copy-on-write through the FUSE recorder), explores its crash states and checks each with the
// built-in oracle (GenChecker). Workloads that tmpfs validation rejects are dropped; a workload
// that fails on the file system under test is counted as failed. A non-nil result is returned
// whenever the base image was made, also with an error.
func RunGenerated(ctx context.Context, cfg GenConfig) (*GenResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	all, err := SelectWorkloads(cfg)
	if err != nil {
		return nil, err
	}
	g, err := fsgen.GuaranteesFor(cfg.FS)
	if err != nil {
		return nil, err
	}
	val, err := fsgen.NewValidator()
	if err != nil {
		return nil, infra.Wrap("tmpfs for workload validation", err)
	}
	defer val.Close()

	if cfg.Out == "" {
		if cfg.Out, err = os.MkdirTemp("", "powercut-fs-"+cfg.FS+"-gen-"); err != nil {
			return nil, err
		}
	}
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(out, WorkloadsDir), 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	res := &GenResult{Out: out, Base: filepath.Join(out, BaseName), FS: cfg.FS, phases: &Phases{},
		pending: map[int]*WorkloadResult{}, onWorkload: cfg.OnWorkload, ByOracle: map[string]int{}}
	defer func() { res.Wall = time.Since(start); res.Times = res.phases.Times() }()

	var selected []*fsgen.Workload
	for _, w := range all {
		if cfg.Limit > 0 && len(selected) == cfg.Limit {
			break
		}
		verr := val.Validate(ctx, w)
		var oe *fsgen.OpError
		switch {
		case verr == nil:
			selected = append(selected, w)
		case errors.As(verr, &oe):
			res.Dropped = append(res.Dropped, DroppedWorkload{ID: w.ID(), Err: oe.Error()})
		default:
			return nil, fmt.Errorf("validating %s on tmpfs: %w", w.ID(), verr)
		}
	}
	fmt.Fprintf(cfg.Log, "powercut fs: %d workloads selected, %d dropped by tmpfs validation\n", len(selected), len(res.Dropped))
	if sh := cfg.Explore.Shard; sh.Count > 1 {
		selected = shardWorkloads(selected, sh)
		cfg.Explore.Shard = explore.Shard{}
		fmt.Fprintf(cfg.Log, "powercut fs: shard %d/%d: %d of them here, each recorded and explored whole\n", sh.Index, sh.Count, len(selected))
	}
	res.Selected = len(selected)

	fmt.Fprintf(cfg.Log, "powercut fs: mkfs.%s on a %d-byte base image %s\n", cfg.FS, cfg.Size, res.Base)
	if err := mkfs(ctx, Config{FS: cfg.FS, Size: cfg.Size, MkfsOpts: cfg.MkfsOpts}, res.Base); err != nil {
		return nil, err
	}
	base, err := os.Open(res.Base)
	if err != nil {
		return res, err
	}
	defer base.Close()
	work, err := leftovers.MkdirTemp("powercut-fs-gen-work-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(work)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	gw := &genWorker{cfg: &cfg, g: g, base: base, basePath: res.Base, work: work, out: out, ph: res.phases}
	for j := 0; j < cfg.Jobs; j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				wr, err := gw.run(ctx, i, selected[i])
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("workload %s: %w", selected[i].ID(), err); cancel() })
					continue
				}
				res.add(wr)
			}
		}()
	}
feed:
	for i := range selected {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return res, firstErr
	}
	if res.Ran == 0 {
		return res, fmt.Errorf("%w: %d selected, %d dropped by tmpfs validation, %d failed on %s", ErrNothingRan,
			res.Selected, len(res.Dropped), res.Failed, cfg.FS)
	}
	return res, nil
}

// add records a finished workload and hands every workload now complete in order to OnWorkload.
func (r *GenResult) add(w *WorkloadResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[w.Index] = w
	for {
		w, ok := r.pending[r.next]
		if !ok {
			return
		}
		delete(r.pending, r.next)
		r.next++
		r.Workloads = append(r.Workloads, w)
		if w.Failed != "" {
			r.Failed++
		} else {
			r.Ran++
		}
		if w.Report != nil {
			r.States += w.Report.States
			r.Checked += w.Report.Checked
			r.Violations += len(w.Report.Violations)
			r.BadStates += w.Report.BadStates
			for _, v := range w.Report.Violations {
				r.ByOracle[v.Oracle]++
			}
		}
		if r.onWorkload != nil {
			r.onWorkload(w)
		}
	}
}

// genWorker runs one workload end to end; it is shared by the parallel jobs (read-only).
type genWorker struct {
	cfg            *GenConfig
	g              fsgen.Guarantees
	base           *os.File
	basePath, work string
	out            string
	ph             *Phases
}

func (gw *genWorker) run(ctx context.Context, idx int, w *fsgen.Workload) (*WorkloadResult, error) {
	wr := &WorkloadResult{Index: idx, ID: w.ID(), Workload: w}
	wdir := filepath.Join(gw.work, strconv.Itoa(idx))
	if err := os.Mkdir(wdir, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(wdir)
	logPath := filepath.Join(wdir, "fs.pclog")
	wph := &Phases{}
	t0 := time.Now()
	tr, err := gw.record(ctx, w, wdir, logPath)
	since(&wph.Record, t0)
	var oe *fsgen.OpError
	if errors.As(err, &oe) {
		wr.Failed = oe.Error()
		wr.Times = wph.Times()
		gw.ph.Record.Add(wph.Record.Load())
		return wr, nil
	}
	if err != nil {
		return nil, err
	}
	l, err := pclog.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	wr.Ops = len(l.Entries)
	// A scratch directory per workload, not per run: it keeps every state's write layer until
	// it is closed (its inodes are persistent), which over hundreds of workloads is gigabytes.
	// Not ctx: the directory must outlive every check's mount (see Run).
	dir, err := scratch.New(context.Background())
	if err != nil {
		return nil, infra.Wrap("FUSE scratch directory", err)
	}
	defer dir.Close()
	chk := &GenChecker{Dir: dir, FS: gw.cfg.FS, MountOpts: gw.cfg.mountOpts(), Workload: w, Trace: tr,
		Timeout: gw.cfg.CheckTimeout, Phases: wph}
	opts := gw.cfg.Explore
	opts.Jobs = 1
	opts.Progress = nil
	t1 := time.Now()
	rep, err := explore.Explore(ctx, explore.Source{Log: l, Bases: map[uint16]io.ReaderAt{0: gw.base}}, opts, chk, nil)
	since(&wph.Explore, t1)
	if err != nil {
		return nil, fmt.Errorf("explore: %w", err)
	}
	wr.Report = rep
	wr.Times = wph.Times()
	gw.ph.Record.Add(wph.Record.Load())
	gw.ph.Explore.Add(wph.Explore.Load())
	gw.ph.Mount.Add(wph.Mount.Load())
	gw.ph.Compare.Add(wph.Compare.Load())
	gw.ph.Fsck.Add(wph.Fsck.Load())
	if len(rep.Violations) > 0 || gw.cfg.KeepLogs {
		keep := filepath.Join(gw.out, WorkloadsDir, wr.ID+".pclog")
		if err := moveFile(logPath, keep); err != nil {
			return nil, fmt.Errorf("keeping the recording: %w", err)
		}
		wr.Log = keep
	}
	return wr, nil
}

// record mounts a copy-on-write view of the base through the FUSE recorder and a loop device
// and runs the workload in process, marking each persistence point in the recording. Every
// resource is released before it returns.
func (gw *genWorker) record(ctx context.Context, w *fsgen.Workload, wdir, logPath string) (tr *fsgen.Trace, err error) {
	recMnt := filepath.Join(wdir, "rec")
	if err := os.Mkdir(recMnt, 0o700); err != nil {
		return nil, err
	}
	rec, err := fuserec.Start(ctx, fuserec.Options{Mount: recMnt, Log: logPath, Base: gw.basePath})
	if err != nil {
		return nil, infra.Wrap("FUSE recorder", err)
	}
	defer func() {
		if cerr := rec.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("stopping the recorder: %w", cerr)
		}
	}()
	m, err := mountQuick(ctx, gw.cfg.FS, rec.Path(), gw.cfg.mountOpts())
	if err != nil {
		err = fmt.Errorf("mounting the fresh %s: %w", gw.cfg.FS, err)
		if isMountErr(err) {
			// mount(8) refusing the fresh file system is most likely a bad --mount-opts.
			return nil, err
		}
		return nil, infra.Wrap("mount", err)
	}
	defer func() {
		if rerr := m.release(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	tr, err = fsgen.Run(ctx, w, m.dir, fsgen.ExecOptions{Mark: rec.Mark, Guarantees: gw.g})
	if err != nil {
		return nil, err
	}
	if err := m.release(); err != nil {
		return nil, fmt.Errorf("unmounting after the workload: %w", err)
	}
	return tr, nil
}

func moveFile(from, to string) error {
	if err := os.Rename(from, to); err == nil {
		return nil
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	o, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}

// SortedOracles returns the oracle names of ByOracle in a stable order.
func (r *GenResult) SortedOracles() []string {
	ks := make([]string, 0, len(r.ByOracle))
	for k := range r.ByOracle {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// shardWorkloads is a shard's share of a campaign: every Count-th workload of the selection
// (which every shard computes alike), starting at Index. A workload is recorded and explored
// whole by one shard: each recording of a workload is another kernel run, so its crash states
// cannot be split among shards that record it separately.
func shardWorkloads(ws []*fsgen.Workload, sh explore.Shard) []*fsgen.Workload {
	var out []*fsgen.Workload
	for i, w := range ws {
		if i%sh.Count == sh.Index {
			out = append(out, w)
		}
	}
	return out
}
