package dmlogwrites

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Superblock is the header of a dm-log-writes log.
type Superblock struct {
	Version    uint64
	NrEntries  uint64
	SectorSize uint32
	// Undefined holds superblock bytes 28-31, which the kernel fills from uninitialised memory.
	// Kept so that a caller can reproduce them; the export writes zeros.
	Undefined [4]byte
}

// Entry is one log entry. Data is a write's payload (nil for other entries, and when the Reader's
// SkipData is set); it is only valid until the next call to Next.
type Entry struct {
	Index     int
	Offset    int64 // byte offset of the entry's header block
	Sector    uint64
	NrSectors uint64
	Flags     uint64
	DataLen   uint64
	Mark      string
	Data      []byte
}

// IsWrite reports whether the entry carries a payload of NrSectors sectors.
func (e *Entry) IsWrite() bool { return e.Flags&(FlagMark|FlagDiscard) == 0 && e.NrSectors > 0 }

// Reader streams the entries of a dm-log-writes log, never holding more than one entry.
type Reader struct {
	src  io.Reader
	r    *bufio.Reader
	sb   Superblock
	ss   int64
	off  int64 // logical offset of the next unread byte
	n    int
	done error
	end  string
	hdr  []byte
	buf  []byte
	e    Entry

	seeker  io.Seeker // set when src can skip payloads by seeking
	srcSize int64     // bytes from the start of the log to the end of src, when seeker is set

	// SkipData makes Next skip write payloads (by seeking when the source allows) instead of
	// reading them: for a pass that only needs the entries' metadata.
	SkipData bool
}

// NewReader reads the superblock from r, which must be positioned at the start of the log.
func NewReader(src io.Reader) (*Reader, error) { return newReader(src, 256<<10) }

func newReader(src io.Reader, bufSize int) (*Reader, error) {
	r := &Reader{src: src, r: bufio.NewReaderSize(src, bufSize)}
	if s, ok := src.(io.Seeker); ok {
		if cur, err := s.Seek(0, io.SeekCurrent); err == nil {
			if end, err := s.Seek(0, io.SeekEnd); err == nil {
				if _, err := s.Seek(cur, io.SeekStart); err != nil {
					return nil, fmt.Errorf("read dm-log-writes superblock: %w", err)
				}
				r.seeker, r.srcSize = s, end-cur
			}
		}
	}
	var fixed [32]byte
	if n, err := io.ReadFull(r.r, fixed[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, &FormatError{Entry: -1, Why: fmt.Sprintf("log is %d bytes, too short for a superblock", n)}
		}
		return nil, fmt.Errorf("read dm-log-writes superblock: %w", err)
	}
	if m := binary.LittleEndian.Uint64(fixed[0:]); m != Magic {
		return nil, &FormatError{Entry: -1, Why: fmt.Sprintf("bad magic %#x (want %#x): not a dm-log-writes log", m, uint64(Magic))}
	}
	r.sb.Version = binary.LittleEndian.Uint64(fixed[8:])
	r.sb.NrEntries = binary.LittleEndian.Uint64(fixed[16:])
	r.sb.SectorSize = binary.LittleEndian.Uint32(fixed[24:])
	copy(r.sb.Undefined[:], fixed[28:])
	if r.sb.Version != Version {
		return nil, &FormatError{Entry: -1, Why: fmt.Sprintf("unsupported version %d (want %d)", r.sb.Version, Version)}
	}
	if r.sb.SectorSize != 512 && r.sb.SectorSize != 4096 {
		return nil, &FormatError{Entry: -1, Why: fmt.Sprintf("sectorsize %d, want 512 or 4096", r.sb.SectorSize)}
	}
	r.ss = int64(r.sb.SectorSize)
	r.off = 32
	if n, err := r.r.Discard(int(r.ss) - 32); err != nil {
		if err == io.EOF {
			return nil, &FormatError{Entry: -1, Why: fmt.Sprintf("log is %d bytes, too short for its %d-byte superblock", 32+n, r.ss)}
		}
		return nil, fmt.Errorf("read dm-log-writes superblock: %w", err)
	}
	r.off = r.ss
	r.hdr = make([]byte, r.ss)
	return r, nil
}

// Superblock returns the log's superblock.
func (r *Reader) Superblock() Superblock { return r.sb }

// Count is the number of entries read so far.
func (r *Reader) Count() int { return r.n }

// Beyond is how many of the entries read lie beyond the superblock's nr_entries (non-zero for the
// log of a recording that was not torn down cleanly).
func (r *Reader) Beyond() int {
	if uint64(r.n) <= r.sb.NrEntries {
		return 0
	}
	return r.n - int(r.sb.NrEntries)
}

// End says why reading ended, once Next has returned io.EOF.
func (r *Reader) End() string { return r.end }

// Next returns the next entry, io.EOF at the end of the log, a *TornError (errors.Is ErrTornTail)
// if the log is cut inside an entry, or an error (a *FormatError for malformed input). Once it has
// returned an error it returns the same error again.
func (r *Reader) Next() (*Entry, error) {
	if r.done != nil {
		return nil, r.done
	}
	e, err := r.next()
	if err != nil {
		r.done = err
		return nil, err
	}
	return e, nil
}

func (r *Reader) torn(why string) error {
	return &TornError{Entries: r.n, Offset: r.off, Why: why}
}

func (r *Reader) next() (*Entry, error) {
	i, off := r.n, r.off
	declared := uint64(i) < r.sb.NrEntries
	m, err := io.ReadFull(r.r, r.hdr)
	switch {
	case err == io.EOF:
		if declared {
			return nil, r.torn(fmt.Sprintf("the log ends after %d of the %d entries its superblock declares", i, r.sb.NrEntries))
		}
		r.end = fmt.Sprintf("end of file at byte %d", off)
		return nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		return nil, r.torn(fmt.Sprintf("header block of entry %d cut after %d of %d bytes", i, m, r.ss))
	case err != nil:
		return nil, fmt.Errorf("read log entry %d at byte %d: %w", i, off, err)
	}
	e := &r.e
	*e = Entry{
		Index:     i,
		Offset:    off,
		Sector:    binary.LittleEndian.Uint64(r.hdr[0:]),
		NrSectors: binary.LittleEndian.Uint64(r.hdr[8:]),
		Flags:     binary.LittleEndian.Uint64(r.hdr[16:]),
		DataLen:   binary.LittleEndian.Uint64(r.hdr[24:]),
	}
	if e.Flags == 0 && e.NrSectors == 0 {
		if declared {
			// nr_entries is written after the entries were submitted, not after they landed: the
			// log device lost entries it had been told about. The earlier ones are still whole.
			return nil, r.torn(fmt.Sprintf("entry %d is empty although the superblock declares %d entries (the log device lost its tail)", i, r.sb.NrEntries))
		}
		r.end = fmt.Sprintf("end marker (empty entry header) at byte %d", off)
		return nil, io.EOF
	}
	if why := r.check(e); why != "" {
		if declared {
			return nil, &FormatError{Entry: i, Offset: off, Why: why}
		}
		// Past nr_entries the log device may hold anything (an older log, old data): a header
		// that is not an entry ends the scan.
		r.end = fmt.Sprintf("entry %d at byte %d, beyond nr_entries %d, is not a valid entry (%s): taken as the end of the log", i, off, r.sb.NrEntries, why)
		return nil, io.EOF
	}
	if e.Flags&FlagMark != 0 {
		e.Mark = string(r.hdr[entryFields : entryFields+e.DataLen])
	}
	size := r.ss
	if e.IsWrite() {
		n := int64(e.NrSectors) * r.ss
		if r.SkipData {
			if err := r.skip(n); err != nil {
				return nil, err
			}
		} else {
			data, err := r.readPayload(n)
			if err != nil {
				return nil, err
			}
			e.Data = data
		}
		size += n
	}
	r.off += size
	r.n++
	return e, nil
}

// check returns why a header is not a valid entry, or "".
func (r *Reader) check(e *Entry) string {
	ss := uint64(r.ss)
	if e.Flags&^knownFlags != 0 {
		return fmt.Sprintf("unknown flags %#x", e.Flags&^uint64(knownFlags))
	}
	if e.Flags&FlagMark != 0 {
		if e.Flags != FlagMark {
			return fmt.Sprintf("MARK combined with other flags (%s)", FlagString(e.Flags))
		}
		if e.Sector != 0 || e.NrSectors != 0 {
			return fmt.Sprintf("MARK with sector %d and nr_sectors %d (the kernel writes 0)", e.Sector, e.NrSectors)
		}
		if e.DataLen > ss-entryFields {
			return fmt.Sprintf("mark data_len %d does not fit in the %d-byte header block (at most %d)", e.DataLen, ss, ss-entryFields)
		}
		return ""
	}
	if e.DataLen != 0 {
		return fmt.Sprintf("data_len %d on a %s entry (only MARK entries carry inline data)", e.DataLen, FlagString(e.Flags))
	}
	lim := uint64(maxExtent) / ss
	if e.Sector > lim || e.NrSectors > lim || e.Sector+e.NrSectors > lim {
		return fmt.Sprintf("absurd extent: sector %d nr_sectors %d (beyond %d bytes)", e.Sector, e.NrSectors, maxExtent)
	}
	switch {
	case e.Flags&FlagDiscard != 0:
		if e.NrSectors == 0 {
			return "DISCARD of 0 sectors"
		}
	case e.NrSectors == 0:
		if e.Flags&FlagFlush == 0 {
			return fmt.Sprintf("%s entry with no sectors and no FLUSH flag", FlagString(e.Flags))
		}
	default:
		if e.NrSectors > uint64(MaxWrite)/ss {
			return fmt.Sprintf("absurd nr_sectors %d: %d bytes, more than the %d MiB one write can carry", e.NrSectors, e.NrSectors*ss, MaxWrite>>20)
		}
	}
	return ""
}

// readPayload reads n bytes, growing the buffer only as the bytes arrive so that a corrupt size in
// a short file cannot make it allocate much.
func (r *Reader) readPayload(n int64) ([]byte, error) {
	r.buf = r.buf[:0]
	for int64(len(r.buf)) < n {
		have := len(r.buf)
		if have == cap(r.buf) {
			nb := make([]byte, have, int64(have)+min(max(int64(have), 64<<10), n-int64(have)))
			copy(nb, r.buf)
			r.buf = nb
		}
		k := min(n-int64(have), int64(cap(r.buf)-have))
		r.buf = r.buf[:have+int(k)]
		m, err := io.ReadFull(r.r, r.buf[have:])
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, r.torn(fmt.Sprintf("payload of entry %d cut after %d of %d bytes", r.n, int64(have+m), n))
			}
			return nil, fmt.Errorf("read log entry %d payload at byte %d: %w", r.n, r.off+r.ss+int64(have+m), err)
		}
	}
	return r.buf, nil
}

// skip passes over n payload bytes, seeking when the source allows it.
func (r *Reader) skip(n int64) error {
	start := r.off + r.ss // payload start
	if b := int64(r.r.Buffered()); n > b && r.seeker != nil {
		if start+n > r.srcSize {
			return r.torn(fmt.Sprintf("payload of entry %d cut after %d of %d bytes", r.n, max(r.srcSize-start, 0), n))
		}
		if _, err := r.r.Discard(int(b)); err != nil {
			return fmt.Errorf("skip log entry %d payload at byte %d: %w", r.n, start, err)
		}
		if _, err := r.seeker.Seek(n-b, io.SeekCurrent); err != nil {
			return fmt.Errorf("skip log entry %d payload at byte %d: %w", r.n, start, err)
		}
		r.r.Reset(r.src)
		return nil
	}
	for done := int64(0); done < n; {
		k := int(min(n-done, 1<<30))
		m, err := r.r.Discard(k)
		done += int64(m)
		if err != nil {
			if err == io.EOF {
				return r.torn(fmt.Sprintf("payload of entry %d cut after %d of %d bytes", r.n, done, n))
			}
			return fmt.Errorf("skip log entry %d payload at byte %d: %w", r.n, start+done, err)
		}
	}
	return nil
}
