package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/dmlogwrites"
	"github.com/powercut/powercut/pclog"
)

func newImportCmd(env *Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "import FORMAT ...",
		Short: "Convert another tool's block-I/O recording into a pclog",
		Long:  "Convert another tool's block-I/O recording into a pclog. Formats: dm-log-writes.",
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("import: unknown format %q (supported: dm-log-writes)", args[0])
			}
			return usagef("import needs a format: powercut import dm-log-writes --dm-log LOGIMG --log F.pclog")
		},
	}
	c.AddCommand(newImportDMLogWritesCmd(env))
	return c
}

func newImportDMLogWritesCmd(env *Env) *cobra.Command {
	var dmLog, logPath, oldOut, base, size string
	c := &cobra.Command{
		Use:   "dm-log-writes --dm-log LOGIMG --log F.pclog [--base IMG | --size N]",
		Short: "Import the log of the kernel's dm-log-writes target",
		Long: `Import the log device of the Linux kernel's dm-log-writes target (as fstests' replay-log
reads it) into a pclog. 512- and 4096-byte sector logs are read; a log whose nr_entries is stale
(the target was not removed cleanly) is scanned up to its end marker; a log cut inside an entry is
imported up to its last whole entry. The log is read twice, streaming (first to validate it and find
its extent); a zstd-compressed log (.zst, or by its magic) is decompressed on the fly.

dm-log-writes logs entries at completion, grouped by flushes, and keeps no submit order: entry i is
imported as submitted at 2i+1 and completed at 2i+2, so every FLUSH covers the entries before it.

The device size comes from --base (the image the recording started from, which is also recorded by
size and xxh3-128 hash), or --size, or else is the smallest multiple of 1 MiB covering every entry.

--log names the pclog written, as it names the recording in every command. Old scripts that gave
the dm-log-writes log as --log and the pclog as --out still work, with a warning.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			out := logPath
			if c.Flags().Changed("out") {
				// --out is the old spelling of the pclog to write. Without --dm-log, --log is the
				// old spelling of the dm-log-writes input too.
				switch {
				case dmLog == "":
					dmLog, out = logPath, oldOut
					fmt.Fprintln(env.Stderr, "Flag --log for the dm-log-writes log has been deprecated, use --dm-log (--log names the pclog written)")
				case logPath != "":
					return usagef("--out is the old spelling of --log: give only --log")
				default:
					out = oldOut
				}
			}
			if dmLog == "" {
				return usagef("import dm-log-writes: --dm-log LOGIMG is required")
			}
			if out == "" {
				return usagef("import dm-log-writes: --log F.pclog is required")
			}
			var opt dmlogwrites.ImportOptions
			if size != "" {
				n, err := parseSize(size)
				if err != nil {
					return usagef("--size: %v", err)
				}
				if n <= 0 {
					return usagef("--size %s: the device size must be positive", size)
				}
				opt.Size = n
			}
			if _, err := os.Stat(dmLog); err != nil {
				return fmt.Errorf("--dm-log: %w", err)
			}
			if sameFile(dmLog, out) || (base != "" && sameFile(base, out)) {
				return usagef("--log %s is an input of the import; it would be overwritten", out)
			}
			if base != "" {
				rc, err := openStream(base)
				if err != nil {
					return fmt.Errorf("--base: %w", err)
				}
				n, hash, err := pclog.HashBase(rc)
				rc.Close()
				if err != nil {
					return fmt.Errorf("--base %s: %w", base, err)
				}
				if opt.Size != 0 && opt.Size != n {
					return usagef("--size %s (%d bytes) differs from the size of --base %s (%d bytes); give one of them", size, opt.Size, base, n)
				}
				opt.Base = &pclog.BaseRef{Device: 0, Size: n, Hash: hash, Path: base}
			}
			s, err := dmlogwrites.Import(func() (io.ReadCloser, error) { return openStream(dmLog) }, out, opt)
			if err != nil {
				return fmt.Errorf("import %s: %w", dmLog, err)
			}
			printImportSummary(env.Stdout, dmLog, out, opt.Base, s)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dmLog, "dm-log", "", "dm-log-writes log device or image (zstd accepted)")
	f.StringVar(&logPath, "log", "", "the recording (.pclog) to write")
	// --log once named the dm-log-writes log here and --out the pclog; --log names a .pclog
	// recording in every command now.
	f.StringVar(&oldOut, "out", "", "same as --log")
	_ = f.MarkDeprecated("out", "use --log for the pclog written and --dm-log for the dm-log-writes log")
	f.StringVar(&base, "base", "", "image of the data device before recording (zstd accepted); sets the device size")
	f.StringVar(&size, "size", "", "device size in bytes or with K/M/G/T (powers of 1024), when there is no --base")
	return c
}

// printImportSummary prints one paragraph describing the import.
func printImportSummary(w io.Writer, logPath, out string, base *pclog.BaseRef, s *dmlogwrites.Summary) {
	var b strings.Builder
	sb := s.Superblock
	fmt.Fprintf(&b, "Imported %d entries of the dm-log-writes log %s (sector size %d, nr_entries %d) into %s: "+
		"%d writes (%d bytes), %d flushes without data, %d discards (%d bytes), %d marks.",
		s.Entries, logPath, sb.SectorSize, sb.NrEntries, out,
		s.ByKind[pclog.KindWrite], s.WriteBytes, s.ByKind[pclog.KindFlush], s.ByKind[pclog.KindDiscard], s.DiscardBytes, s.ByKind[pclog.KindMark])
	classes := make([]string, 0, len(s.ByClass))
	for k := range s.ByClass {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	for i, k := range classes {
		classes[i] = fmt.Sprintf("%d %s", s.ByClass[k], k)
	}
	fmt.Fprintf(&b, " By flags: %s.", strings.Join(classes, ", "))
	if len(s.Marks) > 0 {
		marks := make([]string, len(s.Marks))
		for i, m := range s.Marks {
			marks[i] = fmt.Sprintf("%s@%d", m.Name, m.Index)
		}
		fmt.Fprintf(&b, " Marks (name@entry): %s.", strings.Join(marks, ", "))
	}
	fmt.Fprintf(&b, " Device 0: %d bytes (from %s), %d-byte sectors", s.DeviceSize, s.SizeFrom, sb.SectorSize)
	if base == nil && strings.Contains(s.SizeFrom, "covering") {
		b.WriteString(" (give --base or --size for the real device's size)")
	}
	if base != nil {
		fmt.Fprintf(&b, ", starting from base %s (%s)", base.Path, base.Hash)
	} else {
		b.WriteString(", starting from zeros (no --base)")
	}
	b.WriteString(". Order: entry i is taken as submitted at 2i+1 and completed at 2i+2, since dm-log-writes keeps only a flush-grouped completion order.")
	if s.Torn != nil {
		fmt.Fprintf(&b, " The log has a torn tail: %v; the %d whole entries before it were imported.", s.Torn, s.Entries)
	} else {
		fmt.Fprintf(&b, " Reading stopped at the %s.", s.End)
	}
	if s.Beyond > 0 {
		fmt.Fprintf(&b, " %d entries were found beyond the superblock's stale nr_entries %d (the target was not removed cleanly).", s.Beyond, sb.NrEntries)
	}
	if n := len(s.Marks); n == 0 || s.Marks[n-1].Name != dmlogwrites.EndMark {
		fmt.Fprintf(&b, " The log does not end with the %s mark: the recording was interrupted.", dmlogwrites.EndMark)
	}
	fmt.Fprintln(w, b.String())
}

// sameFile reports whether both paths name one existing file.
func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// openStream opens path for one streaming pass, decompressing it on the fly if it is
// zstd-compressed (by its magic, or a .zst suffix). An uncompressed file is returned as the
// *os.File itself, so that readers can seek past data they do not need.
func openStream(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var magic [4]byte
	n, _ := f.ReadAt(magic[:], 0)
	if !(n == 4 && bytes.Equal(magic[:], zstdMagic)) && !strings.HasSuffix(path, ".zst") {
		return f, nil
	}
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	return &zstdStream{dec: dec, f: f}, nil
}

type zstdStream struct {
	dec *zstd.Decoder
	f   *os.File
}

func (z *zstdStream) Read(p []byte) (int, error) {
	n, err := z.dec.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decompress %s: %w", z.f.Name(), err)
	}
	return n, err
}

func (z *zstdStream) Close() error {
	z.dec.Close()
	return z.f.Close()
}
