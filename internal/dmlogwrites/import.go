package dmlogwrites

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/powercut/powercut/pclog"
)

// ImportOptions describe the device the log was recorded from.
type ImportOptions struct {
	// Size is the device size in bytes. Zero: the base image's size if Base is set, else the
	// smallest multiple of 1 MiB covering every entry.
	Size int64
	// Base references the image the recording starts from (see pclog.HashBase); its Size is the device
	// size. Nil: the recording starts from zeros.
	Base *pclog.BaseRef
	// DeviceName names the device in the pclog header (default "dm-log-writes").
	DeviceName string
}

// MarkAt is a mark and the index of its entry.
type MarkAt struct {
	Index int
	Name  string
}

// Summary describes an imported log.
type Summary struct {
	Superblock Superblock
	Entries    int
	// ByClass counts entries by flag combination (Entry.Class): "WRITE", "FUA|META",
	// "FLUSH (no data)", "DISCARD", "MARK", ...
	ByClass map[string]int
	// ByKind counts the pclog records by kind.
	ByKind       map[pclog.Kind]int
	WriteBytes   int64
	DiscardBytes int64
	Marks        []MarkAt
	// Beyond is how many entries were found beyond the superblock's (stale) nr_entries.
	Beyond int
	// Torn is set when the log ends inside an entry; Entries were imported before it.
	Torn *TornError
	// End says how the log ended (end of file, end marker, invalid header beyond nr_entries).
	End string
	// DeviceSize is the pclog device's size and SizeFrom where it came from.
	DeviceSize int64
	SizeFrom   string
	// Extent is the end (in bytes) of the furthest write or discard, ExtentEntry that entry.
	Extent      int64
	ExtentEntry int
}

// Open opens the log from its start; Import calls it twice (one pass to learn the device's
// extent and validate everything before creating the output, one to copy the data).
type Open func() (io.ReadCloser, error)

// Import converts the dm-log-writes log that open returns into a pclog at out, streaming (one
// entry in memory at a time). On error no output file is left behind.
func Import(open Open, out string, opt ImportOptions) (*Summary, error) {
	s, err := scan(open)
	if err != nil {
		return nil, err
	}
	ss := int64(s.Superblock.SectorSize)
	switch {
	case opt.Base != nil:
		if opt.Size != 0 && opt.Size != opt.Base.Size {
			return nil, fmt.Errorf("device size %d differs from the base image's size %d", opt.Size, opt.Base.Size)
		}
		s.DeviceSize, s.SizeFrom = opt.Base.Size, "the base image"
	case opt.Size != 0:
		s.DeviceSize, s.SizeFrom = opt.Size, "the given size"
	default:
		const mib = 1 << 20
		s.DeviceSize = max((s.Extent+mib-1)/mib*mib, mib)
		s.SizeFrom = "the smallest multiple of 1 MiB covering every entry"
	}
	if s.DeviceSize <= 0 || s.DeviceSize%ss != 0 {
		return nil, fmt.Errorf("device size %d (from %s) is not a positive multiple of the log's %d-byte sector size", s.DeviceSize, s.SizeFrom, ss)
	}
	if s.Extent > s.DeviceSize {
		return nil, fmt.Errorf("log entry %d reaches byte %d, past the end of the %d-byte device (size from %s)", s.ExtentEntry, s.Extent, s.DeviceSize, s.SizeFrom)
	}

	name := opt.DeviceName
	if name == "" {
		name = Source
	}
	h := pclog.Header{
		Version: pclog.FormatVersion,
		Devices: []pclog.Device{{ID: 0, Name: name, Size: s.DeviceSize, SectorSize: int(ss)}},
		Source:  Source,
		Note:    importNote(s),
	}
	if opt.Base != nil {
		b := *opt.Base
		b.Device = 0
		h.Bases = []pclog.BaseRef{b}
	}
	if err := copyEntries(open, out, h, s.Entries); err != nil {
		os.Remove(out)
		return nil, err
	}
	return s, nil
}

// scan is the first pass: validate the whole log, count, and find its extent.
func scan(open Open) (*Summary, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	r, err := NewReader(rc)
	if err != nil {
		return nil, err
	}
	r.SkipData = true
	s := &Summary{Superblock: r.Superblock(), ByClass: map[string]int{}, ByKind: map[pclog.Kind]int{}}
	ss := int64(s.Superblock.SectorSize)
	for {
		e, err := r.Next()
		if err == io.EOF {
			s.End = r.End()
			break
		}
		var torn *TornError
		if errors.As(err, &torn) {
			s.Torn = torn
			break
		}
		if err != nil {
			return nil, err
		}
		s.Entries++
		s.ByClass[e.Class()]++
		k, _ := pclogKind(e)
		s.ByKind[k]++
		switch k {
		case pclog.KindWrite:
			s.WriteBytes += int64(e.NrSectors) * ss
		case pclog.KindDiscard:
			s.DiscardBytes += int64(e.NrSectors) * ss
		case pclog.KindMark:
			s.Marks = append(s.Marks, MarkAt{Index: e.Index, Name: e.Mark})
		}
		if end := int64(e.Sector+e.NrSectors) * ss; (k == pclog.KindWrite || k == pclog.KindDiscard) && end > s.Extent {
			s.Extent, s.ExtentEntry = end, e.Index
		}
	}
	s.Beyond = r.Beyond()
	return s, nil
}

// importNote documents the derived order.
func importNote(s *Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Imported from a dm-log-writes log (sector size %d, nr_entries %d, %d entries", s.Superblock.SectorSize, s.Superblock.NrEntries, s.Entries)
	if s.Beyond > 0 {
		fmt.Fprintf(&b, ", %d beyond the stale nr_entries", s.Beyond)
	}
	if s.Torn != nil {
		fmt.Fprintf(&b, "; the log had a torn tail")
	}
	b.WriteString("); record i is log entry i. dm-log-writes logs entries at completion, grouped by flushes, " +
		"and keeps no submit order, so entry i is taken as submitted at 2i+1 and completed at 2i+2 (a MARK at 2i+2): " +
		"every FLUSH covers every entry before it and none after, as when replaying the log with replay-log.")
	return b.String()
}

// copyEntries is the second pass: write the first n entries as pclog records.
func copyEntries(open Open, out string, h pclog.Header, n int) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	r, err := NewReader(rc)
	if err != nil {
		return err
	}
	w, err := pclog.Create(out, h)
	if err != nil {
		return err
	}
	ss := int64(h.Devices[0].SectorSize)
	for i := 0; i < n; i++ {
		e, err := r.Next()
		if err != nil {
			w.Close()
			if err == io.EOF || errors.Is(err, ErrTornTail) {
				return fmt.Errorf("the log changed while importing it: entry %d of %d is gone (%v)", i, n, err)
			}
			return err
		}
		k, f := pclogKind(e)
		rec := &pclog.Record{Kind: k, Flags: f, Device: 0, Submit: uint64(2*i + 1), Complete: uint64(2*i + 2)}
		switch k {
		case pclog.KindWrite:
			rec.Offset, rec.Length, rec.Data = int64(e.Sector)*ss, int64(e.NrSectors)*ss, e.Data
		case pclog.KindDiscard:
			rec.Offset, rec.Length = int64(e.Sector)*ss, int64(e.NrSectors)*ss
		case pclog.KindFlush:
			// The kernel's sector of a data-less FLUSH (see the package doc), kept for the export.
			rec.Offset = int64(e.Sector) * ss
		case pclog.KindMark:
			rec.Name = e.Mark
			rec.Submit = rec.Complete
		}
		if err := w.Append(rec); err != nil {
			w.Close()
			return fmt.Errorf("import log entry %d at byte %d: %w", i, e.Offset, err)
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return nil
}
