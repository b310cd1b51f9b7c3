package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
)

func newMergeCmd(env *Env) *cobra.Command {
	var (
		out, logPath string
		bases        []string
		asJSON       bool
	)
	c := &cobra.Command{
		Use:   "merge R0.jsonl R1.jsonl ... [--out merged.jsonl] [--json]",
		Short: "Join the results files of the shards of one run into the report of the unsharded run",
		Long: `Join the results files (--out) of the shards of one exploration (--shard i/N, or a batch
engine's array index) into exactly the report the unsharded run gives: the same counts, the same
violations in the same order, the same groups with the same minimal states. Every shard 0..N-1
must be given once, must have finished (a summary line: an interrupted shard is continued with
--resume), and must come from the same run (recording, model, strategy, options, checker); a
missing, duplicated, unfinished or foreign shard is an error naming it.

--out writes the merged results file (the format of explore --out: 'powercut report' renders it).

Exit codes: 0 no violation, 1 violations found, 2 usage error or bad input (do not retry),
3 retryable infrastructure failure (e.g. out of space writing --out).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := mergeResultFiles(args)
			if err != nil {
				return err
			}
			if logPath == "" {
				logPath = m.run.Log
			}
			if len(bases) == 0 {
				bases = m.run.Bases
			}
			replay := func(id string) string { return replayLine(logPath, bases, m.run.SectorSize, id) }
			if out != "" {
				if err := m.write(out, replay); err != nil {
					return err
				}
			}
			rep := m.report
			if asJSON {
				res := exploreResult{Log: logPath, Checks: m.run.Check, Report: rep, Replay: map[string]string{}}
				for _, v := range rep.Violations {
					res.Replay[v.StateID] = replay(v.StateID)
				}
				for _, g := range rep.Groups {
					if g.Minimal != nil {
						res.Replay[g.Minimal.StateID] = replay(g.Minimal.StateID)
					}
				}
				if err := writeJSON(env.Stdout, res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Stdout, "merged %d shard(s) of %s: model %s, strategy %s, discard %s, check %s\n",
					len(args), logPath, m.run.Model, m.run.Strategy, m.run.Discard, m.run.Check)
				printGroups(env.Stdout, rep, replay)
				printSummary(env.Stdout, rep)
				if out != "" {
					fmt.Fprintf(env.Stdout, "wrote %s\n", out)
				}
			}
			if len(rep.Violations) > 0 {
				return ErrViolations
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "write the merged results file (JSON lines, the format of explore --out)")
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable report on stdout (the format of explore --json)")
	c.Flags().StringVar(&logPath, "log", "", "the recording named in the replay commands (default: the one the results name)")
	c.Flags().StringArrayVar(&bases, "base", nil, "base image(s) named in the replay commands")
	return c
}

// merged is the result of joining the shards' results files.
type merged struct {
	run     runInfo // the shards' run, without a shard
	report  *explore.Report
	checked []explore.Checked // every checked state of every shard, by Seq
}

// mergeResultFiles reads the shards' results files, checks they are exactly the shards of one
// finished run (naming the file at fault otherwise) and merges their reports.
func mergeResultFiles(paths []string) (*merged, error) {
	type shardFile struct {
		path string
		res  *results
	}
	var files []shardFile
	for _, p := range paths {
		res, err := readResults(p)
		if err != nil {
			return nil, usagef("merge: %v", err)
		}
		if res.Summary == nil {
			return nil, usagef("merge: %s (%s) has no summary: that run did not finish (continue it with --resume %s)", p, shardName(res.Run.Shard), p)
		}
		if !sameShard(res.Run.Shard, res.Summary.Shard) {
			return nil, usagef("merge: %s: its header says %s but its summary %s", p, shardName(res.Run.Shard), shardName(res.Summary.Shard))
		}
		files = append(files, shardFile{p, res})
	}
	first := files[0]
	unsharded := func(r runInfo) runInfo { r.Shard = nil; return r }
	for _, f := range files[1:] {
		if !unsharded(f.res.Run).sameRun(unsharded(first.res.Run)) {
			return nil, usagef("merge: %s is not a shard of the run of %s: %s", f.path, first.path, runDiff(unsharded(first.res.Run), unsharded(f.res.Run)))
		}
	}
	// Which shard is which, naming the files: explore.Merge checks the same on the reports but
	// knows no file names.
	n := 1
	if s := first.res.Run.Shard; s != nil {
		n = s.Count
	}
	if n <= 1 && len(files) > 1 {
		return nil, usagef("merge: %s is the result of an unsharded run: nothing to merge it with", first.path)
	}
	byIndex := make([]string, n)
	for _, f := range files {
		s := f.res.Run.Shard
		if n > 1 && (s == nil || s.Count != n) {
			return nil, usagef("merge: %s is %s, but %s is %s", f.path, shardName(s), first.path, shardName(first.res.Run.Shard))
		}
		i := 0
		if s != nil {
			i = s.Index
		}
		if byIndex[i] != "" {
			return nil, usagef("merge: shard %d/%d given twice: %s and %s", i, n, byIndex[i], f.path)
		}
		byIndex[i] = f.path
	}
	var missing []string
	for i, p := range byIndex {
		if p == "" {
			missing = append(missing, fmt.Sprintf("%d/%d", i, n))
		}
	}
	if len(missing) > 0 {
		return nil, usagef("merge: shard(s) %s missing (given: %s)", strings.Join(missing, ", "), strings.Join(paths, " "))
	}
	// A state checked by two shards means the files are not shares of one run (or a sharding
	// bug): the merged counts would be wrong.
	owner := map[int]string{}
	var checked []explore.Checked
	reps := make([]*explore.Report, 0, len(files))
	for _, f := range files {
		for seq, c := range f.res.Checked {
			if o, dup := owner[seq]; dup {
				return nil, usagef("merge: state %s (result %d) was checked by both %s and %s", c.StateID, seq, o, f.path)
			}
			owner[seq] = f.path
			checked = append(checked, c)
		}
		reps = append(reps, f.res.Summary)
	}
	sort.Slice(checked, func(a, b int) bool { return checked[a].Seq < checked[b].Seq })
	rep, err := explore.Merge(reps)
	if err != nil {
		return nil, usagef("merge: %v", err)
	}
	run := first.res.Run
	run.Shard = nil
	return &merged{run: run, report: rep, checked: checked}, nil
}

// write writes the merged results file: the run (unsharded), every checked state, every
// violation with its replay command, and the merged summary.
func (m *merged) write(path string, replay func(string) string) error {
	rf, err := createResults(path, m.run, false)
	if err != nil {
		return fmt.Errorf("merge: --out: %w", err)
	}
	for i := range m.checked {
		if err := rf.write(resultLine{Checked: &m.checked[i]}, false); err != nil {
			rf.Close()
			return err
		}
	}
	for i := range m.report.Violations {
		v := &m.report.Violations[i]
		if err := rf.write(resultLine{Violation: v, Replay: replay(v.StateID)}, false); err != nil {
			rf.Close()
			return err
		}
	}
	if err := rf.write(resultLine{Summary: m.report}, true); err != nil {
		rf.Close()
		return err
	}
	return rf.Close()
}

func shardName(s *explore.Shard) string {
	if s == nil || s.Count <= 1 {
		return "unsharded"
	}
	return "shard " + s.String()
}

func sameShard(a, b *explore.Shard) bool {
	if a == nil || b == nil {
		return (a == nil || a.Count <= 1) && (b == nil || b.Count <= 1)
	}
	return *a == *b
}

// runDiff says how two runs differ (for the errors naming a foreign shard or journal).
func runDiff(a, b runInfo) string {
	var d []string
	add := func(what string, x, y any) {
		if x != y {
			d = append(d, fmt.Sprintf("%s %v vs %v", what, x, y))
		}
	}
	add("recording records", a.LogRecords, b.LogRecords)
	if a.LogHash != b.LogHash {
		d = append(d, fmt.Sprintf("recording content %s vs %s (another recording, or the same file recorded again)", orNone(a.LogHash), orNone(b.LogHash)))
	}
	add("shard", shardLabel(a.Shard), shardLabel(b.Shard))
	add("model", a.Model, b.Model)
	add("discard", a.Discard, b.Discard)
	add("strategy", a.Strategy, b.Strategy)
	add("k", a.K, b.K)
	add("states", a.States, b.States)
	add("seed", a.Seed, b.Seed)
	add("from mark", a.FromMark, b.FromMark)
	add("to mark", a.ToMark, b.ToMark)
	add("check", a.Check, b.Check)
	add("sector size", a.SectorSize, b.SectorSize)
	if len(d) == 0 {
		return "different runs"
	}
	return strings.Join(d, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(not recorded)"
	}
	return s
}

func shardLabel(sh *explore.Shard) string {
	if sh == nil || sh.Count <= 1 {
		return "unsharded"
	}
	return fmt.Sprintf("%d/%d", sh.Index, sh.Count)
}
