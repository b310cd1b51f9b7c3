package pclog

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Entry is the metadata of one record, without its data: what the model and explorer need.
// DataOff is the file offset of a WRITE's data.
type Entry struct {
	Kind     Kind
	Flags    Flags
	Device   uint16
	Submit   uint64
	Complete uint64
	Offset   int64
	Length   int64
	DataOff  int64
	Name     string
}

// FUA reports the FUA flag.
func (e *Entry) FUA() bool { return e.Flags&FlagFUA != 0 }

// Preflush reports the PREFLUSH flag.
func (e *Entry) Preflush() bool { return e.Flags&FlagPreflush != 0 }

// Log is an opened, indexed pclog: the header and every record's metadata in memory (about 64
// bytes per record, independent of data size), with data read on demand from the file.
type Log struct {
	Path    string
	Header  Header
	Entries []Entry
	// Torn is non-nil when the file ended in a torn tail; Entries holds what was recovered.
	Torn *TornError
	// DataBytes is the total WRITE payload.
	DataBytes int64
	// Digest identifies the recording's content (Reader.Digest of the records indexed): a
	// re-recorded file under the same name has another.
	Digest string
	f      *os.File
}

// Open indexes the pclog at path by streaming it once (verifying every checksum).
func Open(path string) (*Log, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	l, err := index(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.Path = path
	return l, nil
}

func index(f *os.File) (*Log, error) {
	r, err := NewReader(f)
	if err != nil {
		return nil, err
	}
	l := &Log{Header: r.Header(), f: f}
	var lastComplete uint64
	for {
		rec, payOff, err := r.Next()
		if err == io.EOF {
			break
		}
		var torn *TornError
		if errors.As(err, &torn) {
			l.Torn = torn
			break
		}
		if err != nil {
			return nil, err
		}
		if len(l.Entries) > 0 && rec.Complete <= lastComplete {
			return nil, fmt.Errorf("record %d: completion %d not after the previous record's %d (records must be in completion order)", len(l.Entries), rec.Complete, lastComplete)
		}
		lastComplete = rec.Complete
		e := Entry{Kind: rec.Kind, Flags: rec.Flags, Device: rec.Device, Submit: rec.Submit, Complete: rec.Complete,
			Offset: rec.Offset, Length: rec.Length, Name: rec.Name}
		if rec.Kind == KindWrite {
			e.DataOff = int64(payOff)
			l.DataBytes += rec.Length
		}
		l.Entries = append(l.Entries, e)
	}
	l.Digest = r.Digest()
	return l, nil
}

// ReadData reads len(p) bytes of entry i's data starting at byte off within the write.
func (l *Log) ReadData(i int, p []byte, off int64) error {
	e := &l.Entries[i]
	if e.Kind != KindWrite {
		return fmt.Errorf("entry %d is a %s, it has no data", i, e.Kind)
	}
	if off < 0 || off+int64(len(p)) > e.Length {
		return fmt.Errorf("entry %d: read [%d,+%d) outside its %d bytes", i, off, len(p), e.Length)
	}
	if _, err := l.f.ReadAt(p, e.DataOff+off); err != nil {
		return fmt.Errorf("read data of entry %d: %w", i, err)
	}
	return nil
}

// ReaderAt exposes the log file for data reads at absolute offsets (Entry.DataOff).
func (l *Log) ReaderAt() io.ReaderAt { return l.f }

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// Record returns entry i as a Record with its data loaded.
func (l *Log) Record(i int) (*Record, error) {
	e := &l.Entries[i]
	r := &Record{Kind: e.Kind, Flags: e.Flags, Device: e.Device, Submit: e.Submit, Complete: e.Complete, Offset: e.Offset, Length: e.Length, Name: e.Name}
	if e.Kind == KindWrite {
		r.Data = make([]byte, e.Length)
		if err := l.ReadData(i, r.Data, 0); err != nil {
			return nil, err
		}
	}
	return r, nil
}
