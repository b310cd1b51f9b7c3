package cli

import (
	"fmt"
	"os"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/report"
	"github.com/powercut/powercut/pclog"
)

// outputs handles what an exploring command writes besides its summary: the results journal
// (--out, appended and synced as results come), its continuation (--resume) and the HTML report
// (--report).
type outputs struct {
	rf     *resultsFile
	report string
	replay func(string) string
}

// openOutputs prepares the results journal for a run described by ri. With --resume, the earlier
// results (which must come from the same run) are handed to opts.Resume and the journal goes on
// in that file.
func (f *exploreFlags) openOutputs(out string, ri runInfo, opts *explore.Options, replay func(string) string) (*outputs, error) {
	o := &outputs{report: f.reportHTML, replay: replay}
	path, appendTo := out, false
	if f.resume != "" {
		if out != "" && out != f.resume {
			return nil, usagef("--resume %s continues that file: --out must be the same file or absent", f.resume)
		}
		prev, err := readResults(f.resume)
		if err != nil {
			return nil, usagef("--resume: %v", err)
		}
		if !prev.Run.sameRun(ri) {
			return nil, usagef("--resume %s: that file holds the results of another run (%s)", f.resume, runDiff(prev.Run, ri))
		}
		opts.Resume = prev.Checked
		path, appendTo = f.resume, true
		if prev.Torn {
			// A run killed while writing left half a line: cut it, so the journal goes on whole.
			if err := os.Truncate(f.resume, prev.Whole); err != nil {
				return nil, fmt.Errorf("--resume %s: cutting its torn last line: %w", f.resume, err)
			}
		}
	}
	if path == "" {
		return o, nil
	}
	rf, err := createResults(path, ri, appendTo)
	if err != nil {
		return nil, fmt.Errorf("results file: %w", err)
	}
	o.rf = rf
	opts.OnChecked = func(c explore.Checked) error { return rf.write(resultLine{Checked: &c}, true) }
	return o, nil
}

// violation journals one violation (not synced: the checked line that carries it is).
func (o *outputs) violation(f explore.Found) {
	if o.rf != nil {
		_ = o.rf.write(resultLine{Violation: &f, Replay: o.replay(f.StateID)}, false)
	}
}

// finish writes the summary line and the HTML report, and closes the journal.
func (o *outputs) finish(rep *explore.Report, l *pclog.Log, title string) error {
	var err error
	if o.rf != nil {
		if rep != nil {
			err = o.rf.write(resultLine{Summary: rep}, true)
		}
		if cerr := o.rf.Close(); err == nil {
			err = cerr
		}
		o.rf = nil
	}
	if o.report != "" && rep != nil {
		if rerr := writeReport(o.report, title, l, rep, o.replay); err == nil {
			err = rerr
		}
	}
	return err
}

// writeReport renders the HTML report of rep to path.
func writeReport(path, title string, l *pclog.Log, rep *explore.Report, replay func(string) string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	in := report.Input{Title: title, Log: l, Report: rep, Replay: replay}
	if l != nil {
		in.LogPath = l.Path
	}
	if err := report.WriteHTML(f, in); err != nil {
		f.Close()
		return fmt.Errorf("--report: %w", err)
	}
	return f.Close()
}
