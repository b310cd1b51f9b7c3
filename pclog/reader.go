package pclog

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/zeebo/xxh3"
)

func crc32Update(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }
func putU32(b []byte, v uint32)               { binary.LittleEndian.PutUint32(b, v) }

// ErrTornTail reports a log whose last record is incomplete or fails its checksum: normal after a
// crash of the recorder. Records before it are valid.
var ErrTornTail = errors.New("torn tail")

// TornError says where a torn tail starts and how many records were recovered before it.
type TornError struct {
	Recovered uint64 // whole records read
	Offset    int64  // byte offset of the torn record
	Why       string
}

func (e *TornError) Error() string {
	return fmt.Sprintf("torn tail at byte %d (%s): recovered %d whole records", e.Offset, e.Why, e.Recovered)
}

func (e *TornError) Unwrap() error { return ErrTornTail }

// Reader streams records from a pclog.
type Reader struct {
	r       *bufio.Reader
	hdr     Header
	off     int64
	n       uint64
	hbuf    [RecHeaderSize]byte
	done    error
	Keep    bool // when false, Data is reused between calls to Next
	dataBuf []byte
	digest  *xxh3.Hasher128 // the header's bytes and every whole record's header (see Digest)
}

// ReadHeader parses the file header from r and returns it with its encoded size.
func ReadHeader(r io.Reader) (Header, int64, error) {
	var fixed [12]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, 0, fmt.Errorf("read pclog magic: %w", noEOF(err))
	}
	if [8]byte(fixed[:8]) != Magic {
		return Header{}, 0, fmt.Errorf("not a pclog file (magic %q)", fixed[:8])
	}
	n := binary.LittleEndian.Uint32(fixed[8:])
	if n == 0 || n > maxHeader {
		return Header{}, 0, fmt.Errorf("pclog header length %d out of range", n)
	}
	b := make([]byte, n+4)
	if _, err := io.ReadFull(r, b); err != nil {
		return Header{}, 0, fmt.Errorf("read pclog header: %w", noEOF(err))
	}
	if got, want := CRC32C(b[:n]), binary.LittleEndian.Uint32(b[n:]); got != want {
		return Header{}, 0, fmt.Errorf("pclog header checksum mismatch (%08x != %08x)", got, want)
	}
	var h Header
	if err := json.Unmarshal(b[:n], &h); err != nil {
		return Header{}, 0, fmt.Errorf("parse pclog header: %w", err)
	}
	if err := h.Validate(); err != nil {
		return Header{}, 0, fmt.Errorf("pclog header: %w", err)
	}
	return h, int64(12 + n + 4), nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// NewReader reads the header and returns a reader positioned at the first record.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	dg := xxh3.New128()
	h, off, err := ReadHeader(io.TeeReader(br, dg))
	if err != nil {
		return nil, err
	}
	return &Reader{r: br, hdr: h, off: off, digest: dg}, nil
}

// Digest identifies the content read so far ("xxh3-128:<hex>"): a hash of the file header and of
// every whole record's header, whose CRC32C covers the record's payload. Two recordings with the
// same digest hold the same operations with the same data; it costs no second read of the file.
func (r *Reader) Digest() string {
	sum := r.digest.Sum128().Bytes()
	return "xxh3-128:" + hex.EncodeToString(sum[:])
}

// Header returns the log's header.
func (r *Reader) Header() Header { return r.hdr }

// Offset is the byte offset of the next record.
func (r *Reader) Offset() int64 { return r.off }

// Count is the number of records read so far.
func (r *Reader) Count() uint64 { return r.n }

// Next returns the next record. At the clean end it returns io.EOF; at a torn tail an error
// matching ErrTornTail (a *TornError); on corruption followed by more data, a descriptive error.
// Unless Keep is set, rec.Data is only valid until the next call.
func (r *Reader) Next() (*Record, uint64, error) {
	if r.done != nil {
		return nil, 0, r.done
	}
	rec, payOff, err := r.next()
	if err != nil {
		r.done = err
		return nil, 0, err
	}
	return rec, payOff, nil
}

func (r *Reader) torn(why string) error {
	return &TornError{Recovered: r.n, Offset: r.off, Why: why}
}

// next returns the record and the file offset of its payload.
func (r *Reader) next() (*Record, uint64, error) {
	h := r.hbuf[:]
	n, err := io.ReadFull(r.r, h)
	if err == io.EOF {
		return nil, 0, io.EOF
	}
	if err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, 0, r.torn(fmt.Sprintf("record header cut after %d of %d bytes", n, RecHeaderSize))
		}
		return nil, 0, fmt.Errorf("read record %d at byte %d: %w", r.n, r.off, err)
	}
	if binary.LittleEndian.Uint32(h) != recMagic {
		return nil, 0, r.badRecord(fmt.Sprintf("bad record magic %#x", binary.LittleEndian.Uint32(h)), 0)
	}
	pl := binary.LittleEndian.Uint32(h[8:])
	if pl > MaxPayload {
		return nil, 0, r.badRecord(fmt.Sprintf("payload length %d out of range", pl), 0)
	}
	data, m, err := r.readPayload(int(pl))
	if err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, 0, r.torn(fmt.Sprintf("payload cut after %d of %d bytes", m, pl))
		}
		return nil, 0, fmt.Errorf("read record %d payload at byte %d: %w", r.n, r.off, err)
	}
	crc := crc32Update(CRC32C(h[:44]), data)
	if want := binary.LittleEndian.Uint32(h[44:]); crc != want {
		return nil, 0, r.badRecord(fmt.Sprintf("checksum mismatch (%08x != %08x)", crc, want), 0)
	}
	rec := &Record{
		Kind:     Kind(h[4]),
		Flags:    Flags(h[5]),
		Device:   binary.LittleEndian.Uint16(h[6:]),
		Submit:   binary.LittleEndian.Uint64(h[12:]),
		Complete: binary.LittleEndian.Uint64(h[20:]),
		Offset:   int64(binary.LittleEndian.Uint64(h[28:])),
		Length:   int64(binary.LittleEndian.Uint64(h[36:])),
	}
	switch rec.Kind {
	case KindWrite:
		rec.Data = data
	case KindMark:
		rec.Name = string(data)
	default:
		if pl != 0 {
			return nil, 0, fmt.Errorf("record %d at byte %d: %s carries %d payload bytes", r.n, r.off, rec.Kind, pl)
		}
	}
	if err := rec.Validate(&r.hdr); err != nil {
		return nil, 0, fmt.Errorf("record %d at byte %d: %w", r.n, r.off, err)
	}
	r.digest.Write(h)
	payOff := uint64(r.off) + RecHeaderSize
	r.off += int64(RecHeaderSize) + int64(pl)
	r.n++
	return rec, payOff, nil
}

// readPayload reads a record's pl payload bytes and returns them with the count read. A fresh
// buffer grows as the bytes arrive (by 1 MiB, or by doubling once larger), so that a corrupt length
// in a short or torn file cannot make the reader allocate up to MaxPayload before it finds the end.
func (r *Reader) readPayload(pl int) ([]byte, int, error) {
	if !r.Keep && cap(r.dataBuf) >= pl {
		data := r.dataBuf[:pl]
		m, err := io.ReadFull(r.r, data)
		return data, m, err
	}
	const step = 1 << 20
	data := make([]byte, 0, min(pl, step))
	for len(data) < pl {
		have := len(data)
		if have == cap(data) {
			nd := make([]byte, have, have+min(pl-have, max(have, step)))
			copy(nd, data)
			data = nd
		}
		data = data[:have+min(pl-have, cap(data)-have)]
		if m, err := io.ReadFull(r.r, data[have:]); err != nil {
			return nil, have + m, err
		}
	}
	if !r.Keep {
		r.dataBuf = data
	}
	return data, pl, nil
}

// badRecord decides between a torn tail (nothing follows the bad record) and corruption.
func (r *Reader) badRecord(why string, _ int) error {
	// A whole-but-bad last record is a torn sector write of the tail; if more bytes follow we
	// cannot know where the next record starts: that is corruption, not a torn tail.
	if _, err := r.r.Peek(1); err == io.EOF {
		return r.torn(why)
	}
	return fmt.Errorf("corrupt log: record %d at byte %d: %s (and more data follows, so this is not a torn tail)", r.n, r.off, why)
}
