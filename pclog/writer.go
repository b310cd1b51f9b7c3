package pclog

import (
	"fmt"
	"os"
)

// Writer appends records to a pclog file. It is not safe for concurrent use: a recorder
// serialises appends so that file order is completion order.
//
// Every Append is one write(2) of the whole record, unbuffered: a failed append (ENOSPC, EIO) is
// truncated away and reported to the caller, which must fail the client's request; no record that
// was reported written is ever lost except by the crash of the machine before a Sync.
type Writer struct {
	f        *os.File
	hdr      Header
	size     int64
	records  uint64
	buf      []byte
	lastSize int64 // size before the last Append (for Unappend)
}

// Create creates (truncating) a pclog at path and writes its header.
func Create(path string, h Header) (*Writer, error) {
	if h.Version == 0 {
		h.Version = FormatVersion
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	b, err := encodeHeader(&h)
	if err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("write pclog header to %s: %w", path, err)
	}
	return &Writer{f: f, hdr: h, size: int64(len(b))}, nil
}

// Header returns the header written.
func (w *Writer) Header() Header { return w.hdr }

// Records is the number of records appended.
func (w *Writer) Records() uint64 { return w.records }

// Size is the file size in bytes.
func (w *Writer) Size() int64 { return w.size }

// Append validates and writes one record. On error the file is left ending at the previous record.
func (w *Writer) Append(r *Record) error {
	if err := r.Validate(&w.hdr); err != nil {
		return fmt.Errorf("append record %d: %w", w.records, err)
	}
	pl := r.payloadLen()
	if pl > MaxPayload {
		return fmt.Errorf("append record %d: payload %d bytes exceeds %d", w.records, pl, MaxPayload)
	}
	n := RecHeaderSize + pl
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	b := w.buf[:n]
	encodeRecHeader(b, r, pl)
	switch r.Kind {
	case KindWrite:
		copy(b[RecHeaderSize:], r.Data)
	case KindMark:
		copy(b[RecHeaderSize:], r.Name)
	}
	crc := CRC32C(b[:44])
	crc = crc32Update(crc, b[RecHeaderSize:])
	putU32(b[44:], crc)
	m, err := w.f.WriteAt(b, w.size)
	if err == nil && m != n {
		err = fmt.Errorf("short write (%d of %d bytes)", m, n)
	}
	if err != nil {
		// Leave no partial record behind: the log stays a valid prefix.
		_ = w.f.Truncate(w.size)
		return fmt.Errorf("append record %d to %s: %w", w.records, w.f.Name(), err)
	}
	w.lastSize = w.size
	w.size += int64(n)
	w.records++
	return nil
}

// Unappend removes the record appended last (once): a recorder whose fsync of a FLUSH or FUA
// record failed takes the record back, so the log never claims a flush the client saw fail.
func (w *Writer) Unappend() error {
	if w.records == 0 || w.lastSize == w.size {
		return fmt.Errorf("unappend: no record to remove")
	}
	if err := w.f.Truncate(w.lastSize); err != nil {
		return fmt.Errorf("unappend record %d from %s: %w", w.records-1, w.f.Name(), err)
	}
	w.size = w.lastSize
	w.records--
	return nil
}

// Sync makes every appended record durable (fsync).
func (w *Writer) Sync() error {
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", w.f.Name(), err)
	}
	return nil
}

// Close syncs and closes the file.
func (w *Writer) Close() error {
	err := w.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}
