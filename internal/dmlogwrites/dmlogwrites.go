// Package dmlogwrites converts between the Linux kernel's dm-log-writes log and powercut's pclog.
//
// Why: dm-log-writes (drivers/md/dm-log-writes.c) is how the kernel community records the block
// I/O of a real file system, and fstests' replay-log replays it. Importing such a log lets powercut
// explore the crash states of a real kernel recording; exporting a pclog lets replay-log (and the
// tools built on it) consume what powercut recorded.
//
// The log format (all integers little-endian, S = sectorsize = the data device's logical block
// size, 512 or 4096; every sector and nr_sectors counts S-byte units):
//
//	superblock (byte 0, padded with zeros to S bytes):
//	    le64 magic 0x6a736677736872, le64 version 1, le64 nr_entries, le32 sectorsize,
//	    4 undefined bytes (the kernel copies an uninitialised stack struct)
//	entry (from byte S, back to back):
//	    an S-byte header block {le64 sector, le64 nr_sectors, le64 flags, le64 data_len},
//	    then nr_sectors*S payload bytes unless the entry is a DISCARD or a MARK.
//	    A MARK's text sits at byte 32 of its header block (data_len bytes, no NUL).
//	flags: FLUSH=1 (REQ_PREFLUSH), FUA=2, DISCARD=4, MARK=8, METADATA=16 (informational)
//
// nr_entries is only rewritten after FUA and MARK entries and at teardown, so the log of an
// interrupted recording has a stale nr_entries: the Reader scans on past it until an empty header
// (flags 0, nr_sectors 0), the end of the file, or a header that is not a valid entry (the log
// device's old contents), and reports how many entries it found beyond nr_entries. Within
// nr_entries an invalid header is an error naming the entry and its byte offset. A log cut inside
// an entry, or ending (or zeroed) before nr_entries, has a torn tail: the Reader stops at the last
// whole entry and says so.
//
// # Order on import
//
// The kernel logs an entry when its bio completes, grouped by flushes; it never records submission.
// A dm-log-writes log therefore has no submit order, only this flush-grouped completion order, and
// the import derives one: entry i is submitted at 2i+1 and completed at 2i+2 (a MARK, which has no
// duration, at 2i+2 for both). So every entry completes before the next one is submitted, and every
// FLUSH covers exactly the entries before it in the log — which is what replaying the log up to the
// flush (fstests' replay-log) assumes. The pclog header's Note repeats this derivation.
//
// # Mapping
//
//	WRITE with data           -> KindWrite   (FUA -> FlagFUA, FLUSH -> FlagPreflush, METADATA -> FlagMeta)
//	FLUSH without data        -> KindFlush   (FUA and METADATA kept as FlagFUA, FlagMeta)
//	DISCARD                   -> KindDiscard (flags as for a write)
//	MARK                      -> KindMark    (the text is the name; `dm-log-writes-end` too)
//
// and back on export, so that exporting an imported log reproduces the original byte for byte
// (except the 4 undefined superblock bytes, written as zeros). The kernel stores a sector in a
// data-less FLUSH entry too (dm passes on the sector of the write whose PREFLUSH it split off;
// replay-log ignores it): the import keeps it as the FLUSH record's Offset (sector * sectorsize),
// which has no durability meaning in a pclog, and the export writes it back.
//
// Exporting a pclog recorded natively (not imported): FLUSH becomes a data-less FLUSH entry, and
// WRITE_ZEROES a WRITE entry full of zeros, because dm-log-writes has no write-zeroes entry.
// Records are written in pclog order, which is completion order, and nr_entries is their count;
// replay-log's prefix replay (--limit, --end-mark) then gives exactly the states of powercut's
// `prefix` model. (dm-log-writes itself logs in flush-grouped completion order, which is also a
// completion order.) What the export loses is the submit order: replay-log takes a FLUSH entry to
// cover every entry before it, whereas in the pclog a write that completed while the flush was in
// flight is not covered by it, so states that powercut's reorder model finds may be missing from
// replay-log's flush-based checks.
package dmlogwrites

import (
	"errors"
	"fmt"
	"strings"

	"github.com/powercut/powercut/pclog"
)

// Magic is the superblock magic of a dm-log-writes log.
const Magic = 0x6a736677736872

// Version is the only log version the kernel writes (and this package reads).
const Version = 1

// Entry flags, as the kernel writes them.
const (
	FlagFlush    = 1
	FlagFUA      = 2
	FlagDiscard  = 4
	FlagMark     = 8
	FlagMetadata = 16

	knownFlags = FlagFlush | FlagFUA | FlagDiscard | FlagMark | FlagMetadata
)

const (
	// entryFields is the size of an entry header's fields; the rest of its block is zeros or,
	// for a MARK, the mark text.
	entryFields = 32
	// MaxWrite bounds one write entry's payload: the kernel never logs a bio this large, so a
	// larger nr_sectors is corruption (and a pclog record could not hold it either).
	MaxWrite = pclog.MaxPayload
	// maxExtent bounds the byte range an entry may address (1 EiB): beyond is corruption.
	maxExtent = int64(1) << 60
)

// Source is the pclog Header.Source of an imported log.
const Source = "dm-log-writes"

// EndMark is the mark the kernel logs when the target is torn down.
const EndMark = "dm-log-writes-end"

// ErrMalformed is wrapped by every *FormatError.
var ErrMalformed = errors.New("malformed dm-log-writes log")

// FormatError reports input that is not a valid dm-log-writes log.
type FormatError struct {
	Entry  int   // entry index, or -1 for the superblock
	Offset int64 // byte offset of the entry's header block (0 for the superblock)
	Why    string
}

func (e *FormatError) Error() string {
	if e.Entry < 0 {
		return fmt.Sprintf("dm-log-writes superblock: %s", e.Why)
	}
	return fmt.Sprintf("log entry %d at byte %d: %s", e.Entry, e.Offset, e.Why)
}

// Unwrap returns ErrMalformed.
func (e *FormatError) Unwrap() error { return ErrMalformed }

// ErrTornTail is wrapped by every *TornError.
var ErrTornTail = errors.New("torn tail")

// TornError reports a log cut inside an entry (or before the entries its superblock declares):
// the entries before it are whole and valid.
type TornError struct {
	Entries int   // whole entries read before the torn one
	Offset  int64 // byte offset of the torn entry's header block
	Why     string
}

func (e *TornError) Error() string {
	return fmt.Sprintf("torn tail at byte %d (%s): recovered %d whole entries", e.Offset, e.Why, e.Entries)
}

// Unwrap returns ErrTornTail.
func (e *TornError) Unwrap() error { return ErrTornTail }

// FlagString names a flag combination the way the fixtures' README does: "WRITE" for none, else
// the flags joined with "|" in bit order (METADATA as META).
func FlagString(flags uint64) string {
	if flags == 0 {
		return "WRITE"
	}
	var s []string
	for _, f := range []struct {
		bit  uint64
		name string
	}{{FlagFlush, "FLUSH"}, {FlagFUA, "FUA"}, {FlagDiscard, "DISCARD"}, {FlagMark, "MARK"}, {FlagMetadata, "META"}} {
		if flags&f.bit != 0 {
			s = append(s, f.name)
			flags &^= f.bit
		}
	}
	if flags != 0 {
		s = append(s, fmt.Sprintf("%#x", flags))
	}
	return strings.Join(s, "|")
}

// Class names an entry's flag combination, with " (no data)" for a data-less flush, so that a
// FLUSH carrying a write and a bare FLUSH count apart.
func (e *Entry) Class() string {
	s := FlagString(e.Flags)
	if e.Flags&(FlagMark|FlagDiscard) == 0 && e.NrSectors == 0 {
		s += " (no data)"
	}
	return s
}

// pclogKind maps an entry (already checked by the Reader) to a pclog kind and flags.
func pclogKind(e *Entry) (pclog.Kind, pclog.Flags) {
	var f pclog.Flags
	if e.Flags&FlagFUA != 0 {
		f |= pclog.FlagFUA
	}
	if e.Flags&FlagMetadata != 0 {
		f |= pclog.FlagMeta
	}
	switch {
	case e.Flags&FlagMark != 0:
		return pclog.KindMark, 0
	case e.Flags&FlagDiscard != 0:
		if e.Flags&FlagFlush != 0 {
			f |= pclog.FlagPreflush
		}
		return pclog.KindDiscard, f
	case e.NrSectors == 0: // the Reader only allows this with FLUSH
		return pclog.KindFlush, f
	default:
		if e.Flags&FlagFlush != 0 {
			f |= pclog.FlagPreflush
		}
		return pclog.KindWrite, f
	}
}

// dmFlags is the inverse of pclogKind: the entry flags a record of kind k with flags f exports to.
// WRITE_ZEROES exports as a WRITE.
func dmFlags(k pclog.Kind, f pclog.Flags) uint64 {
	var d uint64
	switch k {
	case pclog.KindMark:
		return FlagMark
	case pclog.KindFlush:
		d = FlagFlush
	case pclog.KindDiscard:
		d = FlagDiscard
	}
	if f&pclog.FlagPreflush != 0 {
		d |= FlagFlush
	}
	if f&pclog.FlagFUA != 0 {
		d |= FlagFUA
	}
	if f&pclog.FlagMeta != 0 {
		d |= FlagMetadata
	}
	return d
}
