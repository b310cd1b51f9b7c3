package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mergeCheck fails in two ways: sector 0 still holds the base, or block 2 is older than block 0
// (with --minimize each, the violations fall into several groups by minimal cause).
const mergeCheck = `a=$(od -An -tx1 -N1 "$POWERCUT_IMAGE" | tr -d ' '); b=$(od -An -tx1 -j8192 -N1 "$POWERCUT_IMAGE" | tr -d ' ')
if [ "$a" = bb ]; then echo "sector 0 still holds the base"; exit 1; fi
if [ "$a" = 03 ] && [ "$b" != 04 ]; then echo "block 2 holds $b, older than block 0"; exit 1; fi`

// comparableJSON is an explore/merge --json output without what legitimately differs between
// runs (time, the shard label).
func comparableJSON(t *testing.T, out string) string {
	t.Helper()
	var r exploreResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bad --json output: %v\n%s", err, out)
	}
	r.Seconds, r.Shard = 0, nil
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exploreShards runs the n shards of one exploration, each with its results file, and returns
// the files.
func exploreShards(t *testing.T, dir string, n int, args ...string) []string {
	t.Helper()
	var files []string
	for i := 0; i < n; i++ {
		f := filepath.Join(dir, fmt.Sprintf("r%d-of-%d.jsonl", i, n))
		code, out, errs := run(t, append([]string{"explore", "--shard", fmt.Sprintf("%d/%d", i, n), "--out", f}, args...)...)
		if code != ExitOK && code != ExitViolations {
			t.Fatalf("shard %d/%d: exit %d\n%s\n%s", i, n, code, out, errs)
		}
		files = append(files, f)
	}
	return files
}

// The shards' results files merge into exactly the unsharded run's report (counts, violations in
// order, groups with their minimal states), whatever the order they are given in; no state is
// checked by two shards; --out writes a results file that 'powercut report' renders and that
// holds the same checked states as the unsharded run's journal.
func TestMergeEqualsUnshardedRun(t *testing.T) {
	logPath, basePath := smallLog(t)
	dir := t.TempDir()
	common := []string{"--log", logPath, "--base", basePath, "--model", "reorder", "--strategy", "exhaustive", "--minimize", "each", "--check", mergeCheck}
	wholeRes := filepath.Join(dir, "whole.jsonl")
	code, wantOut, errs := run(t, append([]string{"explore", "--json", "--out", wholeRes}, common...)...)
	if code != ExitViolations {
		t.Fatalf("unsharded: exit %d\n%s\n%s", code, wantOut, errs)
	}
	want := comparableJSON(t, wantOut)
	var wr exploreResult
	_ = json.Unmarshal([]byte(wantOut), &wr)
	if len(wr.Violations) < 2 || len(wr.Groups) < 2 {
		t.Fatalf("the unsharded run found %d violations in %d groups: want several of each", len(wr.Violations), len(wr.Groups))
	}
	whole, err := readResults(wholeRes)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 3} {
		files := exploreShards(t, dir, n, common...)
		// Given in reverse order.
		rev := make([]string, len(files))
		for i, f := range files {
			rev[len(files)-1-i] = f
		}
		merged := filepath.Join(dir, fmt.Sprintf("merged-%d.jsonl", n))
		code, out, errs := run(t, append(append([]string{"merge", "--json", "--out", merged}, rev...), "--base", basePath)...)
		if code != ExitViolations {
			t.Fatalf("merge of %d shards: exit %d\n%s\n%s", n, code, out, errs)
		}
		if got := comparableJSON(t, out); got != want {
			t.Errorf("merge of %d shards differs from the unsharded run:\ngot  %s\nwant %s", n, got, want)
		}
		// Each shard checked a strict share, and the shares add up to the unsharded run.
		total := 0
		for _, f := range files {
			r, err := readResults(f)
			if err != nil {
				t.Fatal(err)
			}
			if r.Summary.Checked >= whole.Summary.Checked {
				t.Errorf("%s checked %d states, the unsharded run %d: not a share", f, r.Summary.Checked, whole.Summary.Checked)
			}
			total += len(r.Checked)
		}
		if total != len(whole.Checked) {
			t.Errorf("%d shards journaled %d checked states, the unsharded run %d", n, total, len(whole.Checked))
		}
		m, err := readResults(merged)
		if err != nil || m.Summary == nil || m.Run.Shard != nil {
			t.Fatalf("merged results file: %v (%+v)", err, m)
		}
		if len(m.Checked) != len(whole.Checked) {
			t.Errorf("merged file has %d checked states, the unsharded run %d", len(m.Checked), len(whole.Checked))
		}
		for seq, c := range whole.Checked {
			if m.Checked[seq].StateID != c.StateID {
				t.Errorf("result %d: merged %q, unsharded %q", seq, m.Checked[seq].StateID, c.StateID)
			}
		}
		if code, out, errs := run(t, "report", merged, "--out", filepath.Join(dir, "merged.html")); code != ExitOK {
			t.Errorf("report of the merged file: exit %d\n%s%s", code, out, errs)
		}
		// Text output: the groups and the unsharded counts.
		code, out, _ = run(t, append([]string{"merge"}, files...)...)
		if code != ExitViolations || !strings.Contains(out, fmt.Sprintf("checked: %d\n", whole.Summary.Checked)) ||
			!strings.Contains(out, fmt.Sprintf("%d group(s)", len(wr.Groups))) {
			t.Errorf("merge text output (exit %d):\n%s", code, out)
		}
	}
	// A passing check: the merge exits 0.
	pass := []string{"--log", logPath, "--base", basePath, "--model", "reorder", "--check", `test -f "$POWERCUT_IMAGE"`}
	files := exploreShards(t, t.TempDir(), 2, pass...)
	if code, out, errs := run(t, append([]string{"merge"}, files...)...); code != ExitOK {
		t.Errorf("merge of passing shards: exit %d\n%s%s", code, out, errs)
	}
}

// A missing, duplicated, unfinished, foreign or mismatched shard is a bad-input error (exit 2)
// naming it.
func TestMergeRefusesABadSetOfShards(t *testing.T) {
	logPath, basePath := smallLog(t)
	dir := t.TempDir()
	common := []string{"--log", logPath, "--base", basePath, "--model", "reorder", "--check", mergeCheck}
	three := exploreShards(t, filepath.Join(dir), 3, common...)
	two := exploreShards(t, dir, 2, common...)
	other := exploreShards(t, t.TempDir(), 2, append(common[:len(common):len(common)], "--discard", "zero")...)
	// Another recording with as many records (made again: its bytes differ, here in the base
	// path it names): its shards are not this run's, nor may a journal of it be resumed here.
	log2, base2 := smallLog(t)
	rerecorded := exploreShards(t, t.TempDir(), 2, "--log", log2, "--base", base2, "--model", "reorder", "--check", mergeCheck)
	if code, out, errs := run(t, append([]string{"explore", "--resume", two[0], "--shard", "0/2"}, common...)...); code != ExitOK && code != ExitViolations {
		t.Fatalf("resuming a shard's finished journal: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := run(t, "explore", "--log", log2, "--base", base2, "--model", "reorder", "--check", mergeCheck, "--shard", "1/2", "--resume", two[1]); code != ExitError || !strings.Contains(errs, "recording content") {
		t.Errorf("resuming a journal of another recording: exit %d, want %d naming the recording content\n%s", code, ExitError, errs)
	}
	unsharded := filepath.Join(dir, "unsharded.jsonl")
	if code, _, errs := run(t, append([]string{"explore", "--out", unsharded}, common...)...); code != ExitViolations {
		t.Fatalf("unsharded: exit %d %s", code, errs)
	}
	// An unfinished shard: its journal without the summary line.
	b, err := os.ReadFile(three[2])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
	unfinished := filepath.Join(dir, "unfinished.jsonl")
	if err := os.WriteFile(unfinished, []byte(strings.Join(lines[:len(lines)-1], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Shard 0's results relabelled as shard 1: every state "checked twice".
	relabelled := filepath.Join(dir, "relabelled.jsonl")
	b, err = os.ReadFile(two[0])
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.ReplaceAll(string(b), `"shard":{"index":0,"count":2}`, `"shard":{"index":1,"count":2}`))
	if err := os.WriteFile(relabelled, b, 0o644); err != nil {
		t.Fatal(err)
	}
	notResults := filepath.Join(dir, "not.jsonl")
	os.WriteFile(notResults, []byte("hello\n"), 0o644)
	for _, c := range []struct {
		name  string
		files []string
		want  []string
	}{
		{"missing", three[:2], []string{"2/3", "missing"}},
		{"duplicated", []string{three[0], three[1], three[1], three[2]}, []string{"1/3 given twice", three[1]}},
		{"unfinished", []string{three[0], three[1], unfinished}, []string{unfinished, "no summary", "--resume"}},
		{"foreign", []string{two[0], other[1]}, []string{other[1], "discard"}},
		{"another recording", []string{two[0], rerecorded[1]}, []string{rerecorded[1], "recording content"}},
		{"other count", []string{three[0], two[1], three[1], three[2]}, []string{two[1], "shard 1/2", "shard 0/3"}},
		{"unsharded with a shard", []string{unsharded, two[0]}, []string{unsharded, "unsharded"}},
		{"checked twice", []string{two[0], relabelled}, []string{"checked by both", two[0], relabelled}},
		{"not results", []string{notResults, two[0]}, []string{notResults}},
		{"no such file", []string{filepath.Join(dir, "nope.jsonl")}, []string{"nope.jsonl"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := run(t, append([]string{"merge"}, c.files...)...)
			if code != ExitError {
				t.Errorf("exit %d, want %d\n%s%s", code, ExitError, out, errs)
			}
			for _, w := range c.want {
				if !strings.Contains(errs, w) {
					t.Errorf("error does not say %q:\n%s", w, errs)
				}
			}
		})
	}
	// One unsharded file merges to itself.
	if code, out, errs := run(t, "merge", unsharded); code != ExitViolations {
		t.Errorf("merge of one unsharded file: exit %d\n%s%s", code, out, errs)
	}
}

// fs shards only a kept recording: shards that each record the workload again would each
// explore another kernel run, and their results would not merge into one run's. Refused before
// anything is created, whether the shard comes from the flag or a batch engine.
func TestFSShardsNeedAKeptRecording(t *testing.T) {
	code, _, errs := run(t, "fs", "--fs", "ext4", "--workload", "true", "--shard", "1/2")
	if code != ExitError || !strings.Contains(errs, "fresh recording") || !strings.Contains(errs, "--log") {
		t.Errorf("fs --workload --shard 1/2: exit %d, want %d naming the fresh recording and --log\n%s", code, ExitError, errs)
	}
	t.Setenv("SLURM_ARRAY_TASK_ID", "0")
	t.Setenv("SLURM_ARRAY_TASK_COUNT", "3")
	code, _, errs = run(t, "fs", "--fs", "ext4", "--workload", "true")
	if code != ExitError || !strings.Contains(errs, "SLURM_ARRAY_TASK_ID") {
		t.Errorf("fs --workload in a Slurm array: exit %d, want %d naming where the shard came from\n%s", code, ExitError, errs)
	}
}
