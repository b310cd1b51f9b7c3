package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/powercut/powercut/explore"
)

// The results file (--out R.jsonl of explore, fs and demo) is a JSON-lines journal, appended and
// synced as results come, so that an interrupted run can be resumed (--resume) and shards can be
// merged (powercut merge):
//
//	{"powercut_results":1,"run":{...}}        the run: recording, model, options, shard
//	{"checked":{"seq":N,"state":ID,...}}       one per checked state, in result order
//	{"violation":{...},"replay":"powercut …"}  one per violation, as found
//	{"summary":{...}}                          the report, when the run ends
const resultsVersion = 1

// runInfo identifies an exploration: a resumed run or a shard must match it.
type runInfo struct {
	Log        string `json:"log"`
	LogRecords int    `json:"log_records"`
	// LogHash is the recording's content (pclog.Log.Digest), where the recording is an input
	// of the run: a re-recorded file under the same name is another run.
	LogHash    string `json:"log_hash,omitempty"`
	Model      string `json:"model"`
	Discard    string `json:"discard"`
	Strategy   string `json:"strategy"`
	K          int    `json:"k"`
	States     int    `json:"states"`
	Seed       uint64 `json:"seed"`
	FromMark   string `json:"from_mark,omitempty"`
	ToMark     string `json:"to_mark,omitempty"`
	Check      string `json:"check"`
	SectorSize int64  `json:"sector_size,omitempty"`
	// Bases are the base images (as given to --base) the replay commands name.
	Bases []string       `json:"bases,omitempty"`
	Shard *explore.Shard `json:"shard,omitempty"`
}

func newRunInfo(logPath string, records int, o explore.Options, check string) runInfo {
	ri := runInfo{Log: logPath, LogRecords: records, Model: o.Model.String(), Discard: o.Discard.String(), Strategy: string(o.Strategy),
		K: o.K, States: o.States, Seed: o.Seed, FromMark: o.FromMark, ToMark: o.ToMark, Check: check}
	if o.Shard.Count > 1 {
		sh := o.Shard
		ri.Shard = &sh
	}
	return ri
}

// sameRun reports whether two runs explore the same thing (the log path may differ: a
// recording copied to another node is the same recording).
func (a runInfo) sameRun(b runInfo) bool {
	var sa, sb explore.Shard
	if a.Shard != nil {
		sa = *a.Shard
	}
	if b.Shard != nil {
		sb = *b.Shard
	}
	a.Log, b.Log, a.Shard, b.Shard, a.Bases, b.Bases = "", "", nil, nil, nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) && sa == sb
}

type resultLine struct {
	Version   int              `json:"powercut_results,omitempty"`
	Run       *runInfo         `json:"run,omitempty"`
	Checked   *explore.Checked `json:"checked,omitempty"`
	Violation *explore.Found   `json:"violation,omitempty"`
	Replay    string           `json:"replay,omitempty"`
	Summary   *explore.Report  `json:"summary,omitempty"`
}

// resultsFile is an open results journal.
type resultsFile struct {
	f   *os.File
	enc *json.Encoder
}

// createResults starts a new results file (or, resuming, appends to the existing one).
func createResults(path string, ri runInfo, appendTo bool) (*resultsFile, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	r := &resultsFile{f: f, enc: json.NewEncoder(f)}
	if !appendTo {
		if err := r.write(resultLine{Version: resultsVersion, Run: &ri}, true); err != nil {
			f.Close()
			return nil, err
		}
	}
	return r, nil
}

// write appends one line; sync makes it durable before returning (a journal entry a resumed run
// relies on).
func (r *resultsFile) write(l resultLine, sync bool) error {
	if err := r.enc.Encode(l); err != nil {
		return fmt.Errorf("write results %s: %w", r.f.Name(), err)
	}
	if sync {
		if err := r.f.Sync(); err != nil {
			return fmt.Errorf("sync results %s: %w", r.f.Name(), err)
		}
	}
	return nil
}

func (r *resultsFile) Close() error { return r.f.Close() }

// results is what a results file holds.
type results struct {
	Run     runInfo
	Checked map[int]explore.Checked
	Summary *explore.Report
	// Torn: the file ended in a partial line (a run killed while writing): ignored, as it was
	// never synced as a whole. Whole is the length of the file up to its last whole line.
	Torn  bool
	Whole int64
}

// errNotResults: the file is not a powercut results file.
var errNotResults = errors.New("not a powercut results file")

// readResults reads a results file.
func readResults(path string) (*results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	out := &results{Checked: map[int]explore.Checked{}}
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			if len(line) > 0 {
				out.Torn = true
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out.Whole += int64(len(line))
		var l resultLine
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("%s line %d: %w: %v", path, n, errNotResults, err)
		}
		switch {
		case n == 1:
			if l.Version != resultsVersion || l.Run == nil {
				return nil, fmt.Errorf("%s: %w (no run header on line 1; version %d)", path, errNotResults, l.Version)
			}
			out.Run = *l.Run
		case l.Checked != nil:
			out.Checked[l.Checked.Seq] = *l.Checked
		case l.Summary != nil:
			out.Summary = l.Summary
		}
	}
	if out.Run.Model == "" {
		return nil, fmt.Errorf("%s: %w (empty)", path, errNotResults)
	}
	return out, nil
}
