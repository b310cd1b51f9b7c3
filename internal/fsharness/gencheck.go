package fsharness

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fsgen"
	"github.com/powercut/powercut/internal/scratch"
)

// Oracle names of the violations GenChecker reports, besides the fsgen classes (file-missing,
// old-content, data-corrupted, metadata-corrupted, unusable): B3's classification plus the two
// states the built-in oracle cannot even look at.
const (
	OracleUnmountable = "unmountable"
	OracleFsck        = "fsck"
)

// Phases accumulates the time spent in each phase of the generated-workload pipeline, summed
// over workloads (and over parallel jobs, so it is CPU-ish time, not wall time).
type Phases struct {
	Record, Explore, Mount, Compare, Fsck atomic.Int64 // nanoseconds
}

// PhaseTimes is a snapshot of Phases. Generate is the exploration's own time (building states
// and images, deduplicating), i.e. Explore minus the checks.
type PhaseTimes struct {
	Record   time.Duration `json:"record_ns"`
	Generate time.Duration `json:"generate_states_ns"`
	Mount    time.Duration `json:"mount_ns"`
	Compare  time.Duration `json:"compare_ns"`
	Fsck     time.Duration `json:"fsck_ns"`
}

// Times returns the snapshot.
func (p *Phases) Times() PhaseTimes {
	ex := time.Duration(p.Explore.Load())
	t := PhaseTimes{Record: time.Duration(p.Record.Load()), Mount: time.Duration(p.Mount.Load()),
		Compare: time.Duration(p.Compare.Load()), Fsck: time.Duration(p.Fsck.Load())}
	t.Generate = max(ex-t.Mount-t.Compare-t.Fsck, 0)
	return t
}

func since(c *atomic.Int64, t time.Time) { c.Add(int64(time.Since(t))) }

// GenChecker checks a crash state of a generated workload with the built-in oracle: mount it
// (the kernel replays its journal or log, as a reboot would), compare what the persistence points
// issued before the crash point promised (fsgen.Check against the recorded Trace), check the tree
// is usable, unmount, then fsck read-only.
type GenChecker struct {
	Dir       *scratch.Dir
	FS        string
	MountOpts string
	Workload  *fsgen.Workload
	Trace     *fsgen.Trace
	// Timeout bounds the fsck (0: none).
	Timeout time.Duration
	// Phases, if set, receives the time spent mounting, comparing and fsck'ing.
	Phases *Phases
}

// Reads implements explore.ContextReader: the verdict depends on the image and on the last
// persistence point issued before the crash point (which promises to check), not on which marks
// the state covers.
func (k *GenChecker) Reads() explore.Reads { return explore.ReadsLastMark }

func (k *GenChecker) phases() *Phases {
	if k.Phases == nil {
		k.Phases = &Phases{}
	}
	return k.Phases
}

// Check implements explore.Checker.
func (k *GenChecker) Check(ctx context.Context, c *explore.Candidate) (viols []explore.Violation, err error) {
	path, release, err := scratchImage(k.Dir, c)
	if err != nil {
		return nil, err
	}
	defer release()
	ph := k.phases()
	last := fsgen.LastPoint([]string{c.LastMark})

	t0 := time.Now()
	m, err := mountQuick(ctx, k.FS, path, k.MountOpts)
	since(&ph.Mount, t0)
	if err != nil {
		if isMountErr(err) && ctx.Err() == nil {
			return []explore.Violation{{Oracle: OracleUnmountable,
				Detail: fmt.Sprintf("workload %s: the crash state does not mount: %v", k.Workload.ID(), err),
				Output: mountKernel(err) + k.scriptBlock()}}, nil
		}
		return nil, err
	}
	defer func() {
		if rerr := m.release(); rerr != nil && err == nil {
			err = fmt.Errorf("releasing the crash state's mount: %w", rerr)
		}
	}()
	t1 := time.Now()
	v, err := fsgen.Check(m.dir, k.Trace, last)
	since(&ph.Compare, t1)
	if err != nil {
		return nil, fmt.Errorf("oracle: %w", err)
	}
	if !v.OK() {
		viols = append(viols, explore.Violation{Oracle: string(v.Class), Detail: k.verdictDetail(v), Output: k.diffBlock(v) + k.scriptBlock()})
	}
	t2 := time.Now()
	err = m.release()
	since(&ph.Mount, t2)
	if err != nil {
		return nil, fmt.Errorf("unmounting the crash state: %w", err)
	}
	t3 := time.Now()
	fv, err := k.fsck(ctx, path)
	since(&ph.Fsck, t3)
	if err != nil {
		return nil, err
	}
	if fv != nil {
		fv.Oracle = OracleFsck
		fv.Detail = fmt.Sprintf("workload %s: %s", k.Workload.ID(), fv.Detail)
		fv.Output += k.scriptBlock()
		viols = append(viols, *fv)
	}
	return viols, nil
}

func (k *GenChecker) verdictDetail(v *fsgen.Verdict) string {
	after := "no persistence point"
	if v.Last > 0 {
		after = "persistence point " + fsgen.PointName(v.Last)
	}
	return fmt.Sprintf("workload %s: %s after %s (%d broken promises)", k.Workload.ID(), v.Class, after, len(v.Diffs))
}

// diffBlock is the per-object diff of a verdict: path, field, expected, found.
func (k *GenChecker) diffBlock(v *fsgen.Verdict) string {
	var b strings.Builder
	b.WriteString("path\tfield\texpected\tfound\tclass\n")
	for _, d := range v.Diffs {
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\n", d.Path, d.Field, d.Expected, d.Found, d.Class)
	}
	return b.String()
}

func (k *GenChecker) scriptBlock() string {
	return "workload script:\n" + k.Workload.Script()
}

// fsck runs the read-only fsck, again when it failed for a reason that is not the image's.
func (k *GenChecker) fsck(ctx context.Context, path string) (*explore.Violation, error) {
	for try := 0; ; try++ {
		v, err := (&FSChecker{FS: k.FS, Timeout: k.Timeout}).fsck(ctx, path)
		if err != nil || v == nil || !transientFsck(k.FS, v.Output) {
			return v, err
		}
		if try == 4 {
			return nil, fmt.Errorf("%s: %s", v.Detail, strings.TrimSpace(v.Output))
		}
		time.Sleep(time.Duration(try+1) * 20 * time.Millisecond)
	}
}

// transientFsck reports whether an fsck failure says nothing about the image: btrfs check
// first scans every block device to find out whether the file system is mounted, and fails
// with "could not check mount status" when a loop device vanishes during the scan (a parallel
// job detaching its own). Counting that as a violation was a false positive.
func transientFsck(fs, out string) bool {
	return fs == "btrfs" && strings.Contains(out, "could not check mount status")
}
