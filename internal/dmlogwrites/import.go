package dmlogwrites

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/powercut/powercut/pclog"
	"github.com/zeebo/xxh3"
)

// ImportOptions describe the device the log was recorded from.
type ImportOptions struct {
	// Size is the device size in bytes. Zero: the base image's size if Base is set, else the
	// smallest multiple of 1 MiB covering every entry.
	Size int64
	// Base references the image the recording starts from (see HashBase); its Size is the device
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
	// FlushSectors is how many data-less flushes had a non-zero sector kept in the header note;
	// FlushSectorsLost how many did not fit there (their export writes sector 0).
	FlushSectors     int
	FlushSectorsLost int
}

// flushSectorsTag starts the table of data-less flush sectors in the header Note.
const flushSectorsTag = "dm-log-writes flush sectors (entry:sector):"

// maxFlushTable bounds the table's size so that the pclog header stays far below its 1 MiB limit.
const maxFlushTable = 512 << 10

// Open opens the log from its start; Import calls it twice (one pass to learn the device's
// extent and validate everything before creating the output, one to copy the data).
type Open func() (io.ReadCloser, error)

// Import converts the dm-log-writes log that open returns into a pclog at out, streaming (one
// entry in memory at a time). On error no output file is left behind.
func Import(open Open, out string, opt ImportOptions) (*Summary, error) {
	s, flushSectors, err := scan(open)
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
		Note:    importNote(s, flushSectors),
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
func scan(open Open) (*Summary, map[int]uint64, error) {
	rc, err := open()
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	r, err := NewReader(rc)
	if err != nil {
		return nil, nil, err
	}
	r.SkipData = true
	s := &Summary{Superblock: r.Superblock(), ByClass: map[string]int{}, ByKind: map[pclog.Kind]int{}}
	ss := int64(s.Superblock.SectorSize)
	flushSectors := map[int]uint64{}
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
			return nil, nil, err
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
		case pclog.KindFlush:
			if e.Sector != 0 {
				flushSectors[e.Index] = e.Sector
			}
		}
		if end := int64(e.Sector+e.NrSectors) * ss; (k == pclog.KindWrite || k == pclog.KindDiscard) && end > s.Extent {
			s.Extent, s.ExtentEntry = end, e.Index
		}
	}
	s.Beyond = r.Beyond()
	return s, flushSectors, nil
}

// importNote documents the derived order and carries the data-less flushes' sectors.
func importNote(s *Summary, flushSectors map[int]uint64) string {
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
	if len(flushSectors) > 0 {
		b.WriteString("\n" + flushSectorsTag)
		for i := 0; i < s.Entries; i++ {
			sec, ok := flushSectors[i]
			if !ok {
				continue
			}
			if b.Len() > maxFlushTable {
				s.FlushSectorsLost++
				continue
			}
			b.WriteString(" " + strconv.Itoa(i) + ":" + strconv.FormatUint(sec, 10))
			s.FlushSectors++
		}
	}
	return b.String()
}

// parseFlushSectors reads the table importNote wrote; a missing or damaged table gives sector 0.
func parseFlushSectors(note string) map[int]uint64 {
	m := map[int]uint64{}
	_, table, ok := strings.Cut(note, flushSectorsTag)
	if !ok {
		return m
	}
	if i := strings.IndexByte(table, '\n'); i >= 0 {
		table = table[:i]
	}
	for _, f := range strings.Fields(table) {
		a, b, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		i, err1 := strconv.Atoi(a)
		sec, err2 := strconv.ParseUint(b, 10, 64)
		if err1 == nil && err2 == nil {
			m[i] = sec
		}
	}
	return m
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

// HashBase reads a whole base image and returns its size and its pclog hash,
// "xxh3-128:<hex>" (the 128-bit XXH3 of the content, big-endian hex).
func HashBase(r io.Reader) (int64, string, error) {
	h := xxh3.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	if err != nil {
		return 0, "", fmt.Errorf("hash base image: %w", err)
	}
	sum := h.Sum128().Bytes()
	return n, "xxh3-128:" + hex.EncodeToString(sum[:]), nil
}
