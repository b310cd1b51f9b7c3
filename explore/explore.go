// Package explore is powercut's crash-state explorer: it walks the crash points of a recording
// under a durability model, enumerates the states each point allows with a strategy, materialises
// each state as an overlay on the base image, checks every distinct image once, and streams the
// violations it finds in a deterministic order whatever the parallelism.
package explore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Source is a recording and the base images of its devices (nil: the device starts as zeros).
type Source struct {
	Log   *pclog.Log
	Bases map[uint16]io.ReaderAt
	// SectorSize, when set (512 or 4096), overrides the logical sector size the log's header
	// gives its devices: the unit of tearing (model.History.SetSectorSize).
	SectorSize int64
	// Devices, when set, restricts the model to these devices: the other devices' data ops and
	// flushes become no-ops (log indices are kept; marks stay labels), so only these devices'
	// crash points and choices are enumerated. It lives on the Source, not the Options, because a
	// state ID names a crash point of the filtered history: Materialize must see the same filter.
	Devices []uint16
}

// Options configures an exploration.
type Options struct {
	Model    model.Model
	Discard  model.DiscardPolicy
	Strategy model.Strategy // default model.DropK
	K        int            // drop-k / keep-k (default 2)
	States   int            // at most this many states per crash point (0: no limit; sample: 64)
	Seed     uint64
	FromMark string
	ToMark   string
	Jobs     int // parallel checks (default 1)
	Progress func(Progress)
	// Minimize says which violations are minimised (see MinimizeMode); MinimizeBudget bounds
	// the checker runs spent on each (0: 64).
	Minimize       MinimizeMode
	MinimizeBudget int
	// MaxViolations stops the exploration once this many violations were found (0: no limit;
	// 1: fail fast). The report then says it stopped early.
	MaxViolations int
	// Shard makes this run check only its share of the distinct states: every shard enumerates
	// every state (cheap) and deduplicates globally, then checks the distinct images whose content
	// key falls in its share. Merge combines the shards' reports into the unsharded one.
	Shard Shard
	// OnChecked (optional) is called for every state this run checks, in result order: a journal
	// of results that Resume takes back.
	OnChecked func(Checked) error
	// Resume holds results an earlier run recorded, by result position: those states are not
	// checked again, their recorded verdicts count as if checked now.
	Resume map[int]Checked
}

// Shard is one share of a sharded exploration: Index in 0..Count-1 (Count 0 or 1: unsharded).
type Shard struct {
	Index int `json:"index"`
	Count int `json:"count"`
}

func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Checked is the result of checking one distinct state: its position in the deterministic
// result order (the same in every shard and every run of the same options), its ID and what the
// checker found.
type Checked struct {
	Seq        int         `json:"seq"`
	StateID    string      `json:"state"`
	Violations []Violation `json:"violations,omitempty"`
}

// ErrResumeMismatch: a resumed result does not belong to this exploration (another recording,
// model or strategy).
var ErrResumeMismatch = errors.New("the results to resume come from a different exploration")

// MinimizeMode selects which violations are minimised.
type MinimizeMode uint8

const (
	// MinimizeAuto (the default): the first violation of each group when the checker declares
	// itself cheap (Cheap), none otherwise.
	MinimizeAuto MinimizeMode = iota
	// MinimizeOff: none.
	MinimizeOff
	// MinimizeFirst: the first violation of each group (oracle, message class).
	MinimizeFirst
	// MinimizeEach: every violating state; groups then also split by minimal deviation set.
	MinimizeEach
)

// Cheap is implemented by checkers that run in process in milliseconds (the demo's oracles,
// verify, Go tests): minimising their violations by default costs little.
type Cheap interface{ Cheap() bool }

// Progress is reported after every check.
type Progress struct {
	Points, PointsDone         int
	Generated, Distinct, Check int
	Violations                 int
	Elapsed                    time.Duration
}

// Candidate is one distinct crash state handed to a checker.
type Candidate struct {
	ID           string
	Model        model.Model
	Point        model.Point
	LastMark     string
	CoveredMarks []string
	Reason       string
	Images       map[uint16]*image.Image
	// Log and Bases are the recording and the base images the state was built from.
	Log   *pclog.Log
	Bases map[uint16]io.ReaderAt

	epoch *model.Epoch
	state *model.State
}

// MayShow returns every content a sector may hold at this candidate's crash point under its
// model, given the data operations (log indices, completion order) that cover the sector: the
// model's rules stated per sector (model.Epoch.MayShow). Block-level checkers use it instead of
// re-deriving durability.
func (c *Candidate) MayShow(ops []int) []model.Version { return c.epoch.MayShow(ops) }

// Durable reports whether log entry i landed whole in every state of this crash point.
func (c *Candidate) Durable(i int) bool { return c.epoch.IsFixed(i) }

// Violation is one thing a checker found wrong with a state.
type Violation struct {
	Oracle string `json:"oracle"`
	Detail string `json:"detail"`
	Output string `json:"output,omitempty"`
}

// Checker checks one crash state. A non-nil error means the check could not run (a tool
// error); violations mean the state is bad.
type Checker interface {
	Check(ctx context.Context, c *Candidate) ([]Violation, error)
}

// Reads says what a checker's verdict depends on besides the crash image. Explore checks each
// distinct (image, what the checker reads) once: a checker that reads only the image runs once per
// distinct image, one that reads the last mark once per (image, last mark), and one that reads
// the marks once per (image, last mark, covered marks).
type Reads uint8

const (
	// ReadsMarks (the zero value, and what a checker that declares nothing is assumed to read):
	// the last mark issued before the crash point and the marks the state covers.
	ReadsMarks Reads = iota
	// ReadsImage: the verdict depends on the image alone (fsck).
	ReadsImage
	// ReadsLastMark: the image and the last mark issued before the crash point (what the
	// application had been promised), not the covered marks.
	ReadsLastMark
	// ReadsPoint: the image and the crash point itself (an audit compares with what the top
	// promised at that point: the same image may be fine at one point and a breach at a later).
	ReadsPoint
)

// ParseReads parses image|last-mark|marks.
func ParseReads(s string) (Reads, error) {
	switch s {
	case "marks", "":
		return ReadsMarks, nil
	case "image":
		return ReadsImage, nil
	case "last-mark":
		return ReadsLastMark, nil
	}
	return 0, fmt.Errorf("%w %q (want image, last-mark or marks)", ErrUnknownReads, s)
}

func (r Reads) String() string {
	switch r {
	case ReadsImage:
		return "image"
	case ReadsLastMark:
		return "last-mark"
	case ReadsPoint:
		return "point"
	}
	return "marks"
}

// ContextReader is implemented by checkers that declare what they read (see Reads).
type ContextReader interface{ Reads() Reads }

// ReadsOf returns what chk declares it reads (ReadsMarks when it declares nothing).
func ReadsOf(chk Checker) Reads {
	if cr, ok := chk.(ContextReader); ok {
		return cr.Reads()
	}
	return ReadsMarks
}

// ErrUnknownReads: a context name ParseReads does not know.
var ErrUnknownReads = errors.New("unknown checker context")

// ErrBadShard: a shard index outside 0..count-1.
var ErrBadShard = errors.New("bad shard")

// ErrNoModel: Options.Model was not set.
var ErrNoModel = errors.New("no durability model given")

// Found is a violation of one state.
type Found struct {
	// Seq is the state's position in the deterministic result order (checked states, all
	// shards): it orders merged reports.
	Seq      int    `json:"seq"`
	StateID  string `json:"state"`
	LastMark string `json:"last_mark,omitempty"`
	Reason   string `json:"crash_point"`
	// CoveredMarks are the marks all of whose preceding writes landed in this state.
	CoveredMarks []string `json:"covered_marks,omitempty"`
	// Cause is the minimal deviation set of this violation when every violation was minimised
	// (MinimizeEach): part of its group's key.
	Cause string `json:"cause,omitempty"`
	Violation
	// Also counts the other generated states with the same image and mark context (checked
	// once). It is known only when the exploration ends: set in Report.Violations, zero in the
	// streamed callback.
	Also int `json:"same_image_states,omitempty"`
}

// Report summarises an exploration.
type Report struct {
	Model       string  `json:"model"`
	Strategy    string  `json:"strategy"`
	CrashPoints int     `json:"crash_points"`
	States      int     `json:"states"`
	Distinct    int     `json:"distinct_images"`
	Checked     int     `json:"checked"`
	Violations  []Found `json:"violations"`
	BadStates   int     `json:"bad_states"`
	// FirstBad is how many states were checked, in the deterministic result order, up to and
	// including the first bad one (0: none).
	FirstBad  int `json:"states_to_first_violation,omitempty"`
	Truncated int `json:"truncated_points,omitempty"`
	// Groups gathers the violations by cause: oracle, message class and (when minimised) the
	// minimal deviation set, in the order of their first violation.
	Groups []Group `json:"groups"`
	// StoppedEarly: MaxViolations was reached; the counts cover what was explored until then.
	StoppedEarly bool `json:"stopped_early,omitempty"`
	// Shard is set when the run checked one share (Options.Shard); Merge combines the shares.
	Shard   *Shard  `json:"shard,omitempty"`
	Seconds float64 `json:"seconds"`
}

// Group is the violations that share a cause.
type Group struct {
	Oracle string `json:"oracle"`
	// Class is the violation's message with its numbers replaced by '#' (MessageClass).
	Class      string `json:"class"`
	Violations int    `json:"violations"`
	States     int    `json:"states"`
	// First is the group's first violation in result order; Minimal its minimisation, if any.
	First   Found    `json:"first"`
	Minimal *Minimal `json:"minimal,omitempty"`
}

type job struct {
	seq  int
	cand *Candidate
}

type result struct {
	seq     int
	cand    *Candidate
	viols   []Violation
	err     error
	skip    bool // another shard checks this state
	resumed bool // recorded by an earlier run (Options.Resume)
}

// Explore runs the exploration. onViolation (optional) is called for each violation in
// deterministic order as soon as all earlier states are checked.
func Explore(ctx context.Context, src Source, opts Options, chk Checker, onViolation func(Found)) (*Report, error) {
	r, err := newRun(src, opts, chk, onViolation)
	if err != nil {
		return nil, err
	}
	return r.run(ctx)
}

// run is one exploration: a generator enumerates the states crash point by crash point and
// deduplicates them, workers check the distinct ones in parallel, and a collector puts the
// results back in generation order.
type run struct {
	src         Source
	opts        Options
	strat       model.Strategy
	chk         Checker
	reads       Reads
	onViolation func(Found)
	h           *model.History
	pts         []model.Point
	hs          *hasher
	rep         *Report
	start       time.Time
	cancel      context.CancelFunc

	jobs    chan job
	results chan result

	collectErr error
	dupMu      sync.Mutex
	dupCount   map[int]int
	violSeq    []int // seq of each entry of rep.Violations
	violCand   map[int]*Candidate
	progMu     sync.Mutex
	prog       Progress
}

func newRun(src Source, opts Options, chk Checker, onViolation func(Found)) (*run, error) {
	start := time.Now()
	h, err := history(&src)
	if err != nil {
		return nil, err
	}
	if opts.Strategy == "" {
		opts.Strategy = model.DropK
	}
	strat, err := model.ParseStrategy(string(opts.Strategy))
	if err != nil {
		return nil, err
	}
	if opts.Model == 0 {
		return nil, ErrNoModel
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 1
	}
	pts, err := h.MarkRange(h.Points(opts.Model), opts.FromMark, opts.ToMark)
	if err != nil {
		return nil, err
	}
	if opts.Shard.Count > 1 && (opts.Shard.Index < 0 || opts.Shard.Index >= opts.Shard.Count) || opts.Shard.Count < 0 {
		return nil, fmt.Errorf("%w: %s", ErrBadShard, opts.Shard)
	}
	rep := &Report{Model: opts.Model.String(), Strategy: string(opts.Strategy), CrashPoints: len(pts), Violations: []Found{}, Groups: []Group{}}
	if opts.Shard.Count > 1 {
		sh := opts.Shard
		rep.Shard = &sh
	}
	return &run{src: src, opts: opts, strat: strat, chk: chk, reads: ReadsOf(chk), onViolation: onViolation, h: h, pts: pts,
		hs: newHasher(&src, h), rep: rep, start: start, dupCount: map[int]int{}, violCand: map[int]*Candidate{},
		prog: Progress{Points: len(pts)}}, nil
}

func (r *run) run(parent context.Context) (*Report, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	r.cancel = cancel
	r.jobs, r.results = make(chan job), make(chan result)
	var wg sync.WaitGroup
	for w := 0; w < r.opts.Jobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range r.jobs {
				v, err := r.chk.Check(ctx, j.cand)
				r.results <- result{seq: j.seq, cand: j.cand, viols: v, err: err}
			}
		}()
	}
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		r.collect()
	}()
	genErr := r.generate(ctx)
	close(r.jobs)
	wg.Wait()
	close(r.results)
	<-collected
	rep := r.rep
	for i, sq := range r.violSeq {
		rep.Violations[i].Also = r.dupCount[sq]
	}
	rep.Seconds = time.Since(r.start).Seconds()
	if r.collectErr != nil {
		return rep, r.collectErr
	}
	if genErr != nil && !(rep.StoppedEarly && errors.Is(genErr, context.Canceled) && parent.Err() == nil) {
		return rep, genErr
	}
	if err := groupViolations(parent, &r.src, r.h, r.chk, r.opts, rep, r.violSeq, r.violCand); err != nil {
		return rep, err
	}
	rep.Seconds = time.Since(r.start).Seconds()
	return rep, nil
}

// collect takes the results in any order and handles them in generation order.
func (r *run) collect() {
	pending := map[int]result{}
	next := 0
	for res := range r.results {
		pending[res.seq] = res
		for {
			res, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			r.handle(res)
		}
	}
}

// handle records one result: the journal, the counts, the violations, the progress.
func (r *run) handle(res result) {
	rep, opts := r.rep, r.opts
	if rep.StoppedEarly || res.skip {
		return // checks cancelled by the early stop, or another shard's: not results
	}
	rep.Checked++
	if res.err != nil {
		if r.collectErr == nil {
			r.collectErr = fmt.Errorf("check state %s: %w", res.cand.ID, res.err)
			r.cancel()
		}
		return
	}
	if opts.OnChecked != nil && !res.resumed {
		if err := opts.OnChecked(Checked{Seq: res.seq, StateID: res.cand.ID, Violations: res.viols}); err != nil && r.collectErr == nil {
			r.collectErr = fmt.Errorf("record the result of state %s: %w", res.cand.ID, err)
			r.cancel()
		}
	}
	if len(res.viols) > 0 {
		rep.BadStates++
		if rep.FirstBad == 0 {
			rep.FirstBad = res.seq + 1
		}
	}
	for _, v := range res.viols {
		if opts.MaxViolations > 0 && len(rep.Violations) >= opts.MaxViolations {
			break
		}
		f := Found{Seq: res.seq, StateID: res.cand.ID, LastMark: res.cand.LastMark, Reason: res.cand.Reason, CoveredMarks: res.cand.CoveredMarks, Violation: v}
		rep.Violations = append(rep.Violations, f)
		r.violSeq = append(r.violSeq, res.seq)
		r.violCand[res.seq] = res.cand
		if r.onViolation != nil {
			r.onViolation(f)
		}
	}
	if opts.MaxViolations > 0 && len(rep.Violations) >= opts.MaxViolations && !rep.StoppedEarly {
		rep.StoppedEarly = true
		r.cancel()
	}
	if opts.Progress != nil {
		r.progMu.Lock()
		r.prog.Check = rep.Checked
		r.prog.Violations = len(rep.Violations)
		r.prog.Elapsed = time.Since(r.start)
		p := r.prog
		r.progMu.Unlock()
		opts.Progress(p)
	}
}

// generate walks the crash points, enumerates and deduplicates their states, and hands each
// distinct one to the workers (or, resumed or another shard's, straight to the collector).
func (r *run) generate(ctx context.Context) error {
	seen := map[string]int{} // dedup key -> seq
	seq := 0
	walk := r.h.Walk(r.opts.Model, r.opts.Discard)
	keys := r.hs.newLayerKeys()
	for pi, p := range r.pts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e := walk.Epoch(p)
		lk, err := keys.next(e)
		if err != nil {
			return err
		}
		var serr error
		trunc, err := e.States(model.EnumOptions{Strategy: r.strat, K: r.opts.K, Max: r.opts.States, Seed: r.opts.Seed}, func(st *model.State) bool {
			r.rep.States++
			dk, ext, covered, err := r.key(e, lk, st)
			if err != nil {
				serr = err
				return false
			}
			if s, dup := seen[dk.key]; dup {
				r.dupMu.Lock()
				r.dupCount[s]++
				r.dupMu.Unlock()
				return true
			}
			seen[dk.key] = seq
			r.rep.Distinct++
			if serr = r.dispatch(ctx, seq, dk.share, e, p, st, ext, covered); serr != nil {
				return false
			}
			seq++
			return true
		})
		if serr != nil {
			return serr
		}
		if err != nil {
			return err
		}
		if trunc {
			r.rep.Truncated++
		}
		r.progMu.Lock()
		r.prog.PointsDone = pi + 1
		r.prog.Generated = r.rep.States
		r.prog.Distinct = r.rep.Distinct
		r.progMu.Unlock()
	}
	return nil
}

// dedupKey is a state's deduplication key (its image's content key plus what the checker reads)
// and the number that picks its shard.
type dedupKey struct {
	key   string
	share uint64
}

// key computes the overlay of st and its deduplication key.
func (r *run) key(e *model.Epoch, lk key128, st *model.State) (dedupKey, map[uint16]*model.Overlay, []string, error) {
	ext, err := e.Overlay(st)
	if err != nil {
		return dedupKey{}, nil, nil, err
	}
	k, err := r.hs.stateKey(e, lk, ext)
	if err != nil {
		return dedupKey{}, nil, nil, err
	}
	covered := e.CoveredMarks(st)
	dk := fmt.Sprintf("%x.%x", k.a, k.b)
	switch r.reads {
	case ReadsLastMark:
		dk += "|" + e.Point.LastMark
	case ReadsMarks:
		dk += "|" + e.Point.LastMark + "|" + strings.Join(covered, ",")
	case ReadsPoint:
		dk += fmt.Sprintf("|%d", e.Point.T)
	}
	return dedupKey{key: dk, share: k.a}, ext, covered, nil
}

// dispatch sends distinct state seq to a worker, or its result straight to the collector when
// another shard checks it or an earlier run recorded it.
func (r *run) dispatch(ctx context.Context, seq int, share uint64, e *model.Epoch, p model.Point, st *model.State, ext map[uint16]*model.Overlay, covered []string) error {
	sh := r.opts.Shard
	if sh.Count > 1 && int(share%uint64(sh.Count)) != sh.Index {
		return r.send(ctx, nil, &result{seq: seq, skip: true})
	}
	c := &Candidate{ID: e.ID(st), Model: r.opts.Model, Point: p, LastMark: p.LastMark, CoveredMarks: covered,
		Reason: p.Reason, Images: images(&r.src, r.h, ext), Log: r.src.Log, Bases: r.src.Bases, epoch: e, state: st}
	if done, ok := r.opts.Resume[seq]; ok {
		if done.StateID != c.ID {
			return fmt.Errorf("%w: result %d was state %s, this run's is %s", ErrResumeMismatch, seq, done.StateID, c.ID)
		}
		return r.send(ctx, nil, &result{seq: seq, cand: c, viols: done.Violations, resumed: true})
	}
	return r.send(ctx, &job{seq: seq, cand: c}, nil)
}

func (r *run) send(ctx context.Context, j *job, res *result) error {
	if j != nil {
		select {
		case r.jobs <- *j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case r.results <- *res:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// groupViolations fills rep.Groups, minimising as opts says.
func groupViolations(ctx context.Context, src *Source, h *model.History, chk Checker, opts Options, rep *Report, violSeq []int, cands map[int]*Candidate) error {
	mode := opts.Minimize
	if mode == MinimizeAuto {
		mode = MinimizeOff
		if c, ok := chk.(Cheap); ok && c.Cheap() {
			mode = MinimizeFirst
		}
	}
	type gstate struct {
		g      *Group
		states map[string]bool
	}
	var order []string
	groups := map[string]*gstate{}
	minimal := map[string]*Minimal{} // by state ID + group key
	for k, f := range rep.Violations {
		gk := f.Oracle + "\x00" + f.Class()
		var mn *Minimal
		if mode == MinimizeEach || (mode == MinimizeFirst && groups[gk] == nil) {
			mk := f.StateID + "\x00" + gk
			if m, ok := minimal[mk]; ok {
				mn = m
			} else {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m, err := minimize(ctx, src, h, chk, cands[violSeq[k]], f.Violation, opts.MinimizeBudget)
				if err != nil {
					return fmt.Errorf("minimise %s: %w", f.StateID, err)
				}
				minimal[mk], mn = m, m
			}
		}
		key := gk
		if mode == MinimizeEach && mn != nil {
			rep.Violations[k].Cause = mn.Signature()
			f.Cause = rep.Violations[k].Cause
			key += "\x00" + f.Cause
		}
		gs := groups[key]
		if gs == nil {
			gs = &gstate{g: &Group{Oracle: f.Oracle, Class: f.Class(), First: f, Minimal: mn}, states: map[string]bool{}}
			groups[key] = gs
			order = append(order, key)
		}
		gs.g.Violations++
		if !gs.states[f.StateID] {
			gs.states[f.StateID] = true
			gs.g.States++
		}
	}
	rep.Groups = make([]Group, 0, len(order))
	for _, k := range order {
		rep.Groups = append(rep.Groups, *groups[k].g)
	}
	return nil
}

func images(src *Source, h *model.History, ext map[uint16]*model.Overlay) map[uint16]*image.Image {
	out := make(map[uint16]*image.Image, len(h.DevSize))
	for dev, size := range h.DevSize {
		out[dev] = image.New(size, src.Bases[dev], image.LogSource{Log: src.Log}, ext[dev])
	}
	return out
}

// Materialize rebuilds the images of one state from its ID.
func Materialize(src Source, stateID string) (map[uint16]*image.Image, *Candidate, error) {
	h, err := history(&src)
	if err != nil {
		return nil, nil, err
	}
	e, st, err := h.Resolve(stateID)
	if err != nil {
		return nil, nil, err
	}
	ext, err := e.Overlay(st)
	if err != nil {
		return nil, nil, err
	}
	imgs := images(&src, h, ext)
	c := &Candidate{ID: e.ID(st), Model: st.Model, Point: e.Point, LastMark: e.Point.LastMark, CoveredMarks: e.CoveredMarks(st),
		Reason: e.Point.Reason, Images: imgs, Log: src.Log, Bases: src.Bases, epoch: e, state: st}
	return imgs, c, nil
}

// PrefixToMark rebuilds the images of the prefix of the log up to and including mark name.
func PrefixToMark(src Source, name string) (map[uint16]*image.Image, error) {
	h, err := history(&src)
	if err != nil {
		return nil, err
	}
	i := h.FindMark(name)
	if i < 0 {
		return nil, fmt.Errorf("mark %q not in the log", name)
	}
	t := h.Ops[i].Complete + 1
	for _, p := range h.Points(model.Prefix) {
		if p.T == t {
			e := h.Epoch(model.Prefix, model.DiscardZero, p)
			ext, err := e.Overlay(&model.State{Model: model.Prefix, Policy: model.DiscardZero, Point: p.Index})
			if err != nil {
				return nil, err
			}
			return images(&src, h, ext), nil
		}
	}
	return nil, fmt.Errorf("mark %q: no prefix crash point", name)
}
