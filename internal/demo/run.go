package demo

import (
	"context"
	"fmt"
	"os"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Checker runs the demo's oracles on explorer candidates, in process.
type Checker struct {
	X *Expect
}

// Reads implements explore.ContextReader: the oracles read the image and the last mark (the
// acknowledged flush it promised), never the covered marks.
func (c *Checker) Reads() explore.Reads { return explore.ReadsLastMark }

// Cheap implements explore.Cheap: the oracles run in process.
func (c *Checker) Cheap() bool { return true }

// Check implements explore.Checker.
func (c *Checker) Check(ctx context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	img, ok := cand.Images[DeviceID]
	if !ok {
		return nil, fmt.Errorf("state %s has no image of device %d", cand.ID, DeviceID)
	}
	vs, err := c.X.Check(img, img.Size(), cand.LastMark)
	if err != nil {
		return nil, err
	}
	out := make([]explore.Violation, len(vs))
	for i, v := range vs {
		out[i] = v.Explore()
	}
	return out, nil
}

// Explore is v as the explorer reports it: the block, if any, leads the detail.
func (v Violation) Explore() explore.Violation {
	d := v.Detail
	if v.Block >= 0 {
		d = fmt.Sprintf("block %d: %s", v.Block, v.Detail)
	}
	return explore.Violation{Oracle: v.Oracle, Detail: d}
}

// RunOptions is one demo run: a workload and how to explore it.
type RunOptions struct {
	Config   Config
	Model    model.Model
	Strategy model.Strategy
	K        int
	States   int
	Seed     uint64 // exploration seed (sample strategy)
	Jobs     int
	Discard  model.DiscardPolicy
	FromMark string
	ToMark   string
	// Extra, when set, adjusts the exploration options (minimisation, early stop, shard, results
	// journal) before the run.
	Extra func(*explore.Options)
	// LogPath, when set, is where the recording is kept; otherwise it goes to a temporary
	// directory that Outcome.Cleanup removes.
	LogPath     string
	Progress    func(explore.Progress)
	OnViolation func(explore.Found)
}

// Outcome is the result of Run.
type Outcome struct {
	Recording *Result
	Report    *explore.Report
	// FirstBad: states checked until the first violation (0: none found).
	FirstBad int64
	LogPath  string
	tmp      string
}

// Cleanup removes the temporary recording, unless keep is set.
func (o *Outcome) Cleanup(keep bool) {
	if o.tmp != "" && !keep {
		os.RemoveAll(o.tmp)
	}
}

// Run records the workload and explores it.
func Run(ctx context.Context, ro RunOptions) (*Outcome, error) {
	tmp, err := os.MkdirTemp("", "powercut-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	out := &Outcome{tmp: tmp}
	res, err := Record(tmp, ro.Config)
	if err != nil {
		out.Cleanup(false)
		return nil, err
	}
	out.Recording = res
	out.LogPath = res.LogPath
	if ro.LogPath != "" {
		if err := moveFile(res.LogPath, ro.LogPath); err != nil {
			out.Cleanup(false)
			return nil, fmt.Errorf("demo: keep the recording at %s: %w", ro.LogPath, err)
		}
		out.LogPath = ro.LogPath
		res.LogPath = ro.LogPath
	}
	l, err := pclog.Open(out.LogPath)
	if err != nil {
		out.Cleanup(false)
		return nil, fmt.Errorf("demo: open recording: %w", err)
	}
	defer l.Close()
	chk := &Checker{X: res.Expect}
	opts := explore.Options{
		Model: ro.Model, Strategy: ro.Strategy, K: ro.K, States: ro.States, Seed: ro.Seed, Jobs: ro.Jobs,
		Discard: ro.Discard, FromMark: ro.FromMark, ToMark: ro.ToMark, Progress: ro.Progress,
	}
	if ro.Extra != nil {
		ro.Extra(&opts)
	}
	rep, err := explore.Explore(ctx, explore.Source{Log: l}, opts, chk, ro.OnViolation)
	out.Report = rep
	if rep != nil {
		out.FirstBad = int64(rep.FirstBad)
	}
	if err != nil {
		return out, fmt.Errorf("demo: explore: %w", err)
	}
	return out, nil
}

// moveFile renames src to dst, copying when they are on different file systems.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return err
	}
	return os.Remove(src)
}
