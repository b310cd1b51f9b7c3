package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/dmlogwrites"
	"github.com/powercut/powercut/pclog"
)

func newExportCmd(env *Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "export FORMAT ...",
		Short: "Convert a pclog into another tool's format",
		Long:  "Convert a pclog into another tool's format. Formats: dm-log-writes.",
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("export: unknown format %q (supported: dm-log-writes)", args[0])
			}
			return usagef("export needs a format: powercut export dm-log-writes --log F.pclog --out LOGIMG")
		},
	}
	c.AddCommand(newExportDMLogWritesCmd(env))
	return c
}

func newExportDMLogWritesCmd(env *Env) *cobra.Command {
	var in, out string
	c := &cobra.Command{
		Use:   "dm-log-writes --log F.pclog --out LOGIMG",
		Short: "Write a pclog as a dm-log-writes log (for fstests' replay-log)",
		Long: `Write a single-device pclog as a dm-log-writes log that fstests' replay-log replays.
A log imported from dm-log-writes exports byte for byte as the original (except 4 undefined
superblock bytes, written as zeros). Records are written in pclog order (completion order);
WRITE_ZEROES becomes a WRITE of zeros (dm-log-writes has no such entry) and the submit order is lost.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if in == "" {
				return usagef("export dm-log-writes: --log F.pclog is required")
			}
			if out == "" {
				return usagef("export dm-log-writes: --out LOGIMG is required")
			}
			if sameFile(in, out) {
				return usagef("--out %s is the pclog being exported; it would be overwritten", out)
			}
			l, err := pclog.Open(in)
			if err != nil {
				return fmt.Errorf("--log: %w", err)
			}
			defer l.Close()
			f, err := os.Create(out)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			s, err := dmlogwrites.Export(l, f)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return fmt.Errorf("export %s to %s: %w", in, out, err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "Exported %d records of %s to the dm-log-writes log %s (%d-byte sectors, nr_entries %d, %d bytes): "+
				"%d writes, %d flushes, %d discards, %d marks.",
				s.Entries, in, out, s.SectorSize, s.Entries, s.Bytes,
				s.ByKind[pclog.KindWrite]+s.ByKind[pclog.KindWriteZeroes], s.ByKind[pclog.KindFlush], s.ByKind[pclog.KindDiscard], s.ByKind[pclog.KindMark])
			if s.Zeroes > 0 {
				fmt.Fprintf(&b, " %d WRITE_ZEROES records became WRITE entries of zeros (dm-log-writes has no write-zeroes entry).", s.Zeroes)
			}
			if l.Header.Source != dmlogwrites.Source {
				b.WriteString(" Entries are in completion order; the pclog's submit order is not representable in dm-log-writes.")
			}
			if s.Torn != nil {
				fmt.Fprintf(&b, " The pclog has a torn tail (%v): its %d whole records were exported.", s.Torn, s.Entries)
			}
			fmt.Fprintf(&b, " Replay it with: replay-log --log %s --replay DEVICE.", out)
			fmt.Fprintln(env.Stdout, b.String())
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&in, "log", "", "the recording (.pclog) to export (one device)")
	f.StringVar(&in, "in", "", "same as --log")
	_ = f.MarkDeprecated("in", "use --log (the recording is --log in every command)")
	f.StringVar(&out, "out", "", "dm-log-writes log file to write")
	return c
}
