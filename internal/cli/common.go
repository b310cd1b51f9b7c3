package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// isTerminal reports whether w is a terminal (progress bars only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// openBases opens the base images named by --base flags ("IMG" for device 0 or "ID=IMG") and
// checks them against the log's base references. A zstd-compressed base is decompressed to a
// temporary file. The returned closer releases everything.
func openBases(l *pclog.Log, specs []string) (map[uint16]io.ReaderAt, func(), []string, error) {
	bases := map[uint16]io.ReaderAt{}
	paths := []string{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, s := range specs {
		dev := uint16(0)
		path := s
		if a, b, ok := strings.Cut(s, "="); ok {
			if n, err := strconv.ParseUint(a, 10, 16); err == nil {
				dev, path = uint16(n), b
			}
		}
		d, ok := l.Header.Device(dev)
		if !ok {
			closeAll()
			return nil, nil, nil, usagef("--base %s: the log has no device %d", s, dev)
		}
		f, cleanup, err := openMaybeZstd(path)
		if err != nil {
			closeAll()
			return nil, nil, nil, fmt.Errorf("--base %s: %w", path, err)
		}
		closers = append(closers, cleanup)
		st, err := f.Stat()
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		if ref, ok := l.Header.Base(dev); ok {
			if st.Size() != ref.Size {
				closeAll()
				return nil, nil, nil, fmt.Errorf("--base %s: %d bytes, but the log was recorded on a %d-byte base", path, st.Size(), ref.Size)
			}
			if ref.Hash != "" {
				_, got, err := pclog.HashBase(io.NewSectionReader(f, 0, st.Size()))
				if err != nil {
					closeAll()
					return nil, nil, nil, err
				}
				if got != ref.Hash {
					closeAll()
					return nil, nil, nil, fmt.Errorf("--base %s: content hash %s differs from the log's base %s (wrong or modified base image)", path, got, ref.Hash)
				}
			}
		} else if st.Size() < d.Size {
			fmt.Fprintf(os.Stderr, "powercut: note: base %s (%d bytes) is shorter than device %d (%d bytes); the rest reads as zeros\n", path, st.Size(), dev, d.Size)
		}
		bases[dev] = f
		paths = append(paths, s)
	}
	for _, ref := range l.Header.Bases {
		if bases[ref.Device] == nil {
			closeAll()
			hint := ""
			if ref.Path != "" {
				hint = fmt.Sprintf(" (recorded from %s)", ref.Path)
			}
			return nil, nil, nil, usagef("the log was recorded on a base image for device %d%s: pass --base", ref.Device, hint)
		}
	}
	return bases, closeAll, paths, nil
}

// openMaybeZstd opens path; a zstd-compressed file is decompressed into a temporary file first.
func openMaybeZstd(path string) (*os.File, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	var magic [4]byte
	n, _ := f.ReadAt(magic[:], 0)
	if n < 4 || !bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return f, func() { f.Close() }, nil
	}
	defer f.Close()
	tmp, err := os.CreateTemp("", "powercut-base-*.img")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	dec, err := zstd.NewReader(f)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	defer dec.Close()
	if _, err := io.Copy(tmp, dec); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	return tmp, cleanup, nil
}

// replayCommand is the one-line command that rebuilds a state's image.
func replayCommand(logPath string, bases []string, stateID string) string {
	return replayLine(logPath, bases, 0, stateID)
}

// replayLine is replayCommand for a recording explored with --sector-size (0: the header's).
func replayLine(logPath string, bases []string, sectorSize int64, stateID string) string {
	var b strings.Builder
	b.WriteString("powercut replay --log " + shellQuote(logPath))
	for _, s := range bases {
		b.WriteString(" --base " + shellQuote(s))
	}
	if sectorSize != 0 {
		fmt.Fprintf(&b, " --sector-size %d", sectorSize)
	}
	b.WriteString(" --state " + shellQuote(stateID) + " --out crash.img")
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == ':' || r == '=' || r == ',' || r == '+' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// printViolation prints one violation for humans.
func printViolation(w io.Writer, logPath string, bases []string, f explore.Found) {
	printViolationWith(w, f, func(id string) string { return replayCommand(logPath, bases, id) })
}

// printViolationWith prints one violation with the given replay line maker.
func printViolationWith(w io.Writer, f explore.Found, replay func(string) string) {
	fmt.Fprintf(w, "VIOLATION %s: %s", f.StateID, f.Oracle)
	if f.Detail != "" {
		fmt.Fprintf(w, ": %s", f.Detail)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  crash point: %s; last mark: %q\n", f.Reason, f.LastMark)
	if f.Output != "" {
		for _, line := range strings.Split(strings.TrimRight(f.Output, "\n"), "\n") {
			fmt.Fprintf(w, "  | %s\n", line)
		}
	}
	fmt.Fprintf(w, "  rebuild: %s\n", replay(f.StateID))
}

// checkSectorSize refuses, before any output is created, a --sector-size the log's operations
// are not aligned to (0: the header's, nothing to check).
func checkSectorSize(l *pclog.Log, n int64) error {
	if n == 0 {
		return nil
	}
	if n != 512 && n != 4096 {
		return usagef("--sector-size %d: want 512 or 4096", n)
	}
	h, err := model.FromLog(l)
	if err != nil {
		return err
	}
	if err := h.SetSectorSize(n); err != nil {
		return usagef("--sector-size: %v", err)
	}
	return nil
}

// required returns a usage error naming the first of the named flags left empty.
func required(c *cobra.Command, names ...string) error {
	for _, n := range names {
		f := c.Flags().Lookup(n)
		if f == nil {
			panic("cli: no flag --" + n)
		}
		if v := f.Value.String(); v == "" || v == "[]" {
			return usagef("--%s is required", n)
		}
	}
	return nil
}

// atLeast returns a usage error naming the first flag whose value is below its minimum.
func atLeast(checks ...flagMin) error {
	for _, c := range checks {
		if c.v < c.min {
			return usagef("--%s %d: must be at least %d", c.name, c.v, c.min)
		}
	}
	return nil
}

type flagMin struct {
	name   string
	v, min int64
}

// exclusive returns a usage error naming two of the named flags that were both given.
func exclusive(c *cobra.Command, names ...string) error {
	first := ""
	for _, n := range names {
		if f := c.Flags().Lookup(n); f != nil && f.Value.String() != "" {
			if first != "" {
				return usagef("--%s and --%s cannot be used together", first, n)
			}
			first = n
		}
	}
	return nil
}
