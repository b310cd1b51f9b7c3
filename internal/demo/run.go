package demo

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// Checker runs the demo's oracles on explorer candidates, in process.
type Checker struct {
	X *Expect
	// checks counts Check calls; first is the count at the first bad state (0: none yet).
	checks atomic.Int64
	mu     sync.Mutex
	first  int64
}

// Check implements explore.Checker.
func (c *Checker) Check(ctx context.Context, cand *explore.Candidate) ([]explore.Violation, error) {
	n := c.checks.Add(1)
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
		d := v.Detail
		if v.Block >= 0 {
			d = fmt.Sprintf("block %d: %s", v.Block, v.Detail)
		}
		out[i] = explore.Violation{Oracle: v.Oracle, Detail: d}
	}
	if len(out) > 0 {
		c.mu.Lock()
		if c.first == 0 || n < c.first {
			c.first = n
		}
		c.mu.Unlock()
	}
	return out, nil
}

// FirstBad is the number of states checked up to and including the first bad one (0: none).
// Exact with one job; with more it is the smallest count among the bad states' checks.
func (c *Checker) FirstBad() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// RunOptions is one demo run: a workload and how to explore it.
type RunOptions struct {
	Config   Config
	Model    model.Model
	Strategy string
	K        int
	States   int
	Seed     uint64 // exploration seed (sample strategy)
	Jobs     int
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
	rep, err := explore.Explore(ctx, explore.Source{Log: l}, explore.Options{
		Model: ro.Model, Strategy: ro.Strategy, K: ro.K, States: ro.States, Seed: ro.Seed, Jobs: ro.Jobs,
		Progress: ro.Progress,
	}, chk, ro.OnViolation)
	out.Report = rep
	out.FirstBad = chk.FirstBad()
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
