package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

func newLogCmd(env *Env) *cobra.Command {
	c := &cobra.Command{Use: "log", Short: "Inspect a recording (.pclog)"}
	c.AddCommand(newLogInfo(env), newLogDump(env))
	return c
}

// LogInfo is the summary `powercut log info` prints.
type LogInfo struct {
	Path        string           `json:"path"`
	Source      string           `json:"source,omitempty"`
	Note        string           `json:"note,omitempty"`
	Devices     []pclog.Device   `json:"devices"`
	Bases       []pclog.BaseRef  `json:"bases,omitempty"`
	Records     int              `json:"records"`
	ByKind      map[string]int   `json:"ops_by_kind"`
	ByKindFlags map[string]int   `json:"ops_by_kind_and_flags"`
	FUA         int              `json:"fua"`
	Preflush    int              `json:"preflush"`
	WriteBytes  int64            `json:"write_bytes"`
	ZeroBytes   int64            `json:"write_zeroes_bytes"`
	Discarded   int64            `json:"discard_bytes"`
	FlushEpochs int              `json:"flush_epochs"`
	Marks       []MarkInfo       `json:"marks"`
	CrashPoints map[string]int   `json:"crash_points"`
	PerDevice   map[uint16]int   `json:"ops_per_device"`
	Torn        *pclog.TornError `json:"torn,omitempty"`
}

// MarkInfo is one mark and its position.
type MarkInfo struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
}

func summarize(l *pclog.Log) (*LogInfo, error) {
	in := &LogInfo{Path: l.Path, Source: l.Header.Source, Note: l.Header.Note, Devices: l.Header.Devices, Bases: l.Header.Bases,
		Records: len(l.Entries), ByKind: map[string]int{}, ByKindFlags: map[string]int{}, CrashPoints: map[string]int{}, PerDevice: map[uint16]int{}, Torn: l.Torn}
	for i, e := range l.Entries {
		in.ByKind[e.Kind.String()]++
		kf := e.Kind.String()
		if fl := e.Flags.String(); fl != "" {
			kf += " " + fl
		}
		in.ByKindFlags[kf]++
		if e.Kind != pclog.KindMark {
			in.PerDevice[e.Device]++
		}
		if e.FUA() {
			in.FUA++
		}
		if e.Preflush() {
			in.Preflush++
		}
		switch e.Kind {
		case pclog.KindWrite:
			in.WriteBytes += e.Length
		case pclog.KindWriteZeroes:
			in.ZeroBytes += e.Length
		case pclog.KindDiscard:
			in.Discarded += e.Length
		case pclog.KindMark:
			in.Marks = append(in.Marks, MarkInfo{Name: e.Name, Index: i})
		}
		if e.Kind == pclog.KindFlush || e.Preflush() {
			in.FlushEpochs++
		}
	}
	in.FlushEpochs++ // the epoch after the last flush (or the only one)
	h, err := model.FromLog(l)
	if err != nil {
		return nil, err
	}
	for _, m := range model.Models() {
		mm, _ := model.ParseModel(m)
		in.CrashPoints[m] = len(h.Points(mm))
	}
	return in, nil
}

func newLogInfo(env *Env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info LOG.pclog",
		Short: "Summarise a recording: ops by kind, bytes, flush epochs, marks, devices, crash points",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := pclog.Open(args[0])
			if err != nil {
				return err
			}
			defer l.Close()
			in, err := summarize(l)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Stdout, in)
			}
			printInfo(env.Stdout, in)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return c
}

func printInfo(w io.Writer, in *LogInfo) {
	fmt.Fprintf(w, "log:          %s\n", in.Path)
	if in.Source != "" {
		fmt.Fprintf(w, "source:       %s\n", in.Source)
	}
	if in.Note != "" {
		fmt.Fprintf(w, "note:         %s\n", in.Note)
	}
	for _, d := range in.Devices {
		fmt.Fprintf(w, "device %d:     %q %d bytes, %d-byte sectors, %d ops\n", d.ID, d.Name, d.Size, d.SectorSize, in.PerDevice[d.ID])
	}
	for _, b := range in.Bases {
		fmt.Fprintf(w, "base of %d:    %d bytes %s %s\n", b.Device, b.Size, b.Hash, b.Path)
	}
	fmt.Fprintf(w, "records:      %d\n", in.Records)
	kinds := make([]string, 0, len(in.ByKind))
	for k := range in.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "  %-12s %d\n", k, in.ByKind[k])
	}
	fmt.Fprintf(w, "  with FUA     %d\n  with PREFLUSH %d\n", in.FUA, in.Preflush)
	fmt.Fprintf(w, "by kind and flags:\n")
	kfs := make([]string, 0, len(in.ByKindFlags))
	for k := range in.ByKindFlags {
		kfs = append(kfs, k)
	}
	sort.Strings(kfs)
	for _, k := range kfs {
		fmt.Fprintf(w, "  %-22s %d\n", k, in.ByKindFlags[k])
	}
	fmt.Fprintf(w, "write bytes:  %d\nzeroed bytes: %d\ndiscarded:    %d\n", in.WriteBytes, in.ZeroBytes, in.Discarded)
	fmt.Fprintf(w, "flush epochs: %d\n", in.FlushEpochs)
	fmt.Fprintf(w, "marks:        %d\n", len(in.Marks))
	for _, m := range in.Marks {
		fmt.Fprintf(w, "  %-20s record %d\n", m.Name, m.Index)
	}
	fmt.Fprintf(w, "crash points:")
	for _, m := range model.Models() {
		fmt.Fprintf(w, " %s %d", m, in.CrashPoints[m])
	}
	fmt.Fprintln(w)
	if in.Torn != nil {
		fmt.Fprintf(w, "torn tail:    %v\n", in.Torn)
	}
}

func newLogDump(env *Env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "dump LOG.pclog",
		Short: "Print every record (streamed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			r, err := pclog.NewReader(f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			enc := json.NewEncoder(env.Stdout)
			for i := 0; ; i++ {
				rec, _, err := r.Next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					if pe, ok := err.(*pclog.TornError); ok {
						fmt.Fprintf(env.Stderr, "powercut: %s: %v\n", args[0], pe)
						return nil
					}
					return fmt.Errorf("%s: %w", args[0], err)
				}
				if asJSON {
					if err := enc.Encode(struct {
						Index int `json:"index"`
						*pclog.Record
						Flags string `json:"flags,omitempty"`
					}{i, rec, rec.Flags.String()}); err != nil {
						return err
					}
					continue
				}
				fl := rec.Flags.String()
				if fl != "" {
					fl = " " + fl
				}
				switch rec.Kind {
				case pclog.KindMark:
					fmt.Fprintf(env.Stdout, "%6d MARK %q seq %d\n", i, rec.Name, rec.Complete)
				case pclog.KindFlush:
					fmt.Fprintf(env.Stdout, "%6d dev %d FLUSH%s submit %d complete %d\n", i, rec.Device, fl, rec.Submit, rec.Complete)
				default:
					fmt.Fprintf(env.Stdout, "%6d dev %d %s%s [%d,+%d) submit %d complete %d\n", i, rec.Device, rec.Kind, fl, rec.Offset, rec.Length, rec.Submit, rec.Complete)
				}
			}
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per record")
	return c
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
