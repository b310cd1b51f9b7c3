// Package report renders an exploration as one self-contained HTML file: a summary table, one
// block per group of violations (minimal state, the sentence that explains it, its replay
// command, the checker's output and any tree diff) and an I/O timeline per device on the
// recording's global order, with the selected group's deviating operations and crash point
// highlighted. The file needs no network and loads no external script: the recording's
// operations travel as compact JSON and a small inline script draws them as SVG.
package report

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/pclog"
)

// Input is what a report shows.
type Input struct {
	// Title names the run (e.g. the command line or the log).
	Title string
	// Log is the recording explored (its operations draw the timeline); LogPath names it.
	Log     *pclog.Log
	LogPath string
	Report  *explore.Report
	// Replay gives the command that rebuilds each state ID (violations and minimal states).
	Replay func(stateID string) string
	// Created is shown in the footer (zero: now).
	Created time.Time
}

// opJSON is one operation of the timeline: kind, flags, device, offset, length, submit,
// complete (short keys keep a 10,000-operation log well under a megabyte).
type opJSON [7]int64

type groupJSON struct {
	Oracle      string   `json:"oracle"`
	Class       string   `json:"class"`
	Violations  int      `json:"violations"`
	States      int      `json:"states"`
	FirstState  string   `json:"first_state"`
	Detail      string   `json:"detail"`
	Output      string   `json:"output,omitempty"`
	Replay      string   `json:"replay,omitempty"`
	Minimal     string   `json:"minimal,omitempty"`
	MinReplay   string   `json:"minimal_replay,omitempty"`
	Explanation string   `json:"explanation,omitempty"`
	Checks      int      `json:"checks,omitempty"`
	Deviating   []int    `json:"deviating"`
	Kinds       []string `json:"deviation_kinds"`
	CrashSeq    int64    `json:"crash_seq"`
	CrashPoint  string   `json:"crash_point"`
	LastMark    string   `json:"last_mark,omitempty"`
	Where       []string `json:"where,omitempty"`
}

type deviceJSON struct {
	ID   uint16 `json:"id"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

type dataJSON struct {
	Devices []deviceJSON   `json:"devices"`
	Ops     []opJSON       `json:"ops"`
	Marks   map[int]string `json:"marks"`
	Groups  []groupJSON    `json:"groups"`
}

//go:embed report.html.tmpl
var pageTmpl string

//go:embed report.js
var pageJS string

var tmpl = template.Must(template.New("report").Parse(pageTmpl))

// WriteHTML writes the report.
func WriteHTML(w io.Writer, in Input) error {
	if in.Report == nil {
		return fmt.Errorf("report: no exploration report")
	}
	if in.Created.IsZero() {
		in.Created = time.Now()
	}
	d := dataJSON{Marks: map[int]string{}, Groups: []groupJSON{}}
	if in.Log != nil {
		for _, dv := range in.Log.Header.Devices {
			d.Devices = append(d.Devices, deviceJSON{ID: dv.ID, Name: dv.Name, Size: dv.Size})
		}
		d.Ops = make([]opJSON, 0, len(in.Log.Entries))
		for i, e := range in.Log.Entries {
			d.Ops = append(d.Ops, opJSON{int64(e.Kind), int64(e.Flags), int64(e.Device), e.Offset, e.Length, int64(e.Submit), int64(e.Complete)})
			if e.Kind == pclog.KindMark {
				d.Marks[i] = e.Name
			}
		}
	}
	replay := func(id string) string {
		if in.Replay == nil || id == "" {
			return ""
		}
		return in.Replay(id)
	}
	for _, g := range in.Report.Groups {
		gj := groupJSON{Oracle: g.Oracle, Class: g.Class, Violations: g.Violations, States: g.States, FirstState: g.First.StateID,
			Detail: g.First.Detail, Output: g.First.Output, Replay: replay(g.First.StateID), Deviating: []int{}, Kinds: []string{},
			CrashPoint: g.First.Reason, LastMark: g.First.LastMark, CrashSeq: -1}
		if m := g.Minimal; m != nil {
			gj.Minimal, gj.MinReplay, gj.Explanation, gj.Checks = m.StateID, replay(m.StateID), m.Explanation, m.Checks
			gj.CrashSeq, gj.CrashPoint, gj.LastMark, gj.Where = int64(m.CrashSeq), m.Reason, m.LastMark, m.Where
			if m.Violation.Output != "" {
				gj.Output = m.Violation.Output
			}
			for _, dv := range m.Deviations {
				gj.Deviating = append(gj.Deviating, dv.Op)
				gj.Kinds = append(gj.Kinds, dv.Kind)
				if dv.Kind == "flipped" || dv.Kind == "carried" {
					gj.Deviating = append(gj.Deviating, dv.Other)
					gj.Kinds = append(gj.Kinds, dv.Kind)
				}
			}
		}
		d.Groups = append(d.Groups, gj)
	}
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	enc.SetEscapeHTML(true) // the JSON sits inside a <script> element
	if err := enc.Encode(d); err != nil {
		return err
	}
	r := in.Report
	return tmpl.Execute(w, map[string]any{
		"Title":   in.Title,
		"LogPath": in.LogPath,
		"R":       r,
		"Groups":  d.Groups,
		"Ops":     len(d.Ops),
		"Created": in.Created.UTC().Format(time.RFC3339),
		"Data":    template.JS(data.String()),
		"Script":  template.JS(pageJS),
	})
}
