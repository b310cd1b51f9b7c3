// Package pclog defines powercut's recording format (.pclog): one append-only, streamable file
// holding every block operation a storage stack issued, with its data, in completion order.
//
// Why a format of our own: dm-log-writes keeps only a flush-grouped completion order and loses the
// submit order that the durability model needs (a write in flight while a FLUSH ran is not covered
// by it). A pclog keeps both sequence numbers of every operation, from one global order shared by
// all devices of the recording.
//
// Layout (all integers little-endian):
//
//	file    = magic[8] "PCLOG\x00\x00\x01", u32 headerLen, header JSON, u32 crc32c(header JSON),
//	          record*
//	record  = u32 recMagic 0x31524350 ("PCR1"), u8 kind, u8 flags, u16 device, u32 payloadLen,
//	          u64 submit, u64 complete, u64 offset, u64 length, u32 crc32c, payload
//
// The CRC32C (Castagnoli) of a record covers its 44 header bytes before the CRC and its payload.
// A WRITE's payload is its data (payloadLen == length); a MARK's payload is its name; other kinds
// carry none. A FLUSH has length 0 and an offset that is 0 or a sector-aligned byte offset with no
// durability meaning (see Record); a MARK has offset and length 0. Records are appended when an
// operation completes, so file order is completion order.
// A torn tail (a crash of the recorder) is normal: readers stop at the last whole record and report
// how many records they recovered.
package pclog

import (
	"encoding/hex"
	"io"

	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/zeebo/xxh3"
)

// Magic starts every pclog file.
var Magic = [8]byte{'P', 'C', 'L', 'O', 'G', 0, 0, 1}

// FormatVersion is the version written in the header.
const FormatVersion = 1

const (
	recMagic      = 0x31524350
	RecHeaderSize = 48
	// MaxPayload bounds one record's payload (a WRITE of 256 MiB is already absurd for a block
	// request); a larger length in a record means corruption, not a big write.
	MaxPayload = 256 << 20
	maxHeader  = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the Castagnoli CRC of p.
func CRC32C(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Kind is an operation type.
type Kind uint8

const (
	KindWrite Kind = iota + 1
	KindWriteZeroes
	KindDiscard
	KindFlush
	KindMark
)

var kindNames = map[Kind]string{KindWrite: "WRITE", KindWriteZeroes: "WRITE_ZEROES", KindDiscard: "DISCARD", KindFlush: "FLUSH", KindMark: "MARK"}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if strings.EqualFold(n, s) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown operation kind %q", s)
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	*k = v
	return err
}

// Flags modify an operation.
type Flags uint8

const (
	// FlagFUA: the operation is durable once it completes (REQ_FUA, NBD_CMD_FLAG_FUA).
	FlagFUA Flags = 1 << iota
	// FlagPreflush: a flush precedes the operation (REQ_PREFLUSH with data); the model treats it as
	// a FLUSH with the same submit and complete points.
	FlagPreflush
	// FlagMeta is informational (REQ_META), kept so dm-log-writes export is byte-identical.
	FlagMeta
	flagMask = FlagFUA | FlagPreflush | FlagMeta
)

func (f Flags) String() string {
	var s []string
	if f&FlagPreflush != 0 {
		s = append(s, "PREFLUSH")
	}
	if f&FlagFUA != 0 {
		s = append(s, "FUA")
	}
	if f&FlagMeta != 0 {
		s = append(s, "META")
	}
	return strings.Join(s, "|")
}

// Device describes one recorded block device.
type Device struct {
	ID         uint16 `json:"id"`
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	SectorSize int    `json:"sector_size"`
}

// BaseRef identifies the image a recording starts from (absent: all zeros).
type BaseRef struct {
	Device uint16 `json:"device"`
	Size   int64  `json:"size"`
	// Hash is "xxh3-128:<hex>" of the whole base content.
	Hash string `json:"hash"`
	// Path is a hint only (where the base was when recorded).
	Path string `json:"path,omitempty"`
}

// Header is the JSON header of a pclog.
type Header struct {
	Version int       `json:"version"`
	Devices []Device  `json:"devices"`
	Bases   []BaseRef `json:"bases,omitempty"`
	// Source says what produced the recording ("in-process", "nbd", "fuse", "dm-log-writes").
	Source string `json:"source,omitempty"`
	// Note is free text (e.g. how the import derived submit/complete order).
	Note string `json:"note,omitempty"`
}

// Validate checks the header for consistency.
func (h *Header) Validate() error {
	if h.Version != FormatVersion {
		return fmt.Errorf("unsupported pclog version %d (this powercut reads %d)", h.Version, FormatVersion)
	}
	if len(h.Devices) == 0 {
		return errors.New("pclog header lists no device")
	}
	seen := map[uint16]bool{}
	for _, d := range h.Devices {
		if seen[d.ID] {
			return fmt.Errorf("pclog header lists device %d twice", d.ID)
		}
		seen[d.ID] = true
		if d.SectorSize != 512 && d.SectorSize != 4096 {
			return fmt.Errorf("device %d (%s): sector size %d, want 512 or 4096", d.ID, d.Name, d.SectorSize)
		}
		if d.Size <= 0 || d.Size%int64(d.SectorSize) != 0 {
			return fmt.Errorf("device %d (%s): size %d is not a positive multiple of the sector size %d", d.ID, d.Name, d.Size, d.SectorSize)
		}
	}
	for _, b := range h.Bases {
		if !seen[b.Device] {
			return fmt.Errorf("base image names unknown device %d", b.Device)
		}
	}
	return nil
}

// Device returns the device with the given id.
func (h *Header) Device(id uint16) (Device, bool) {
	for _, d := range h.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}

// Base returns the base reference of a device, if any.
func (h *Header) Base(id uint16) (BaseRef, bool) {
	for _, b := range h.Bases {
		if b.Device == id {
			return b, true
		}
	}
	return BaseRef{}, false
}

// Record is one operation. Data is the WRITE payload (nil for other kinds); Name is a MARK's name.
//
// WRITE, WRITE_ZEROES and DISCARD address [Offset, Offset+Length), sector-aligned and inside the
// device. A FLUSH has Length 0; its Offset is usually 0 but may be any non-negative multiple of the
// sector size, even beyond the device's end: it has no durability meaning (a FLUSH covers the
// whole device) and is kept only so that an imported dm-log-writes log exports byte for byte
// (the kernel stores a sector in data-less FLUSH entries). A MARK has Offset and Length 0.
type Record struct {
	Kind     Kind   `json:"kind"`
	Flags    Flags  `json:"-"`
	Device   uint16 `json:"device"`
	Submit   uint64 `json:"submit"`
	Complete uint64 `json:"complete"`
	Offset   int64  `json:"offset"`
	Length   int64  `json:"length"`
	Name     string `json:"name,omitempty"`
	Data     []byte `json:"-"`
}

// FUA reports the FUA flag.
func (r *Record) FUA() bool { return r.Flags&FlagFUA != 0 }

// Preflush reports the PREFLUSH flag.
func (r *Record) Preflush() bool { return r.Flags&FlagPreflush != 0 }

func (r *Record) payloadLen() int {
	switch r.Kind {
	case KindWrite:
		return len(r.Data)
	case KindMark:
		return len(r.Name)
	}
	return 0
}

// Validate checks the record's fields against each other and against the header's devices.
func (r *Record) Validate(h *Header) error {
	d, ok := h.Device(r.Device)
	if !ok {
		return fmt.Errorf("unknown device %d", r.Device)
	}
	if r.Flags&^flagMask != 0 {
		return fmt.Errorf("unknown flags %#x", uint8(r.Flags))
	}
	if r.Submit > r.Complete {
		return fmt.Errorf("submit %d after complete %d", r.Submit, r.Complete)
	}
	switch r.Kind {
	case KindWrite, KindWriteZeroes, KindDiscard:
		ss := int64(d.SectorSize)
		if r.Offset < 0 || r.Length <= 0 || r.Offset%ss != 0 || r.Length%ss != 0 {
			return fmt.Errorf("%s offset %d length %d not aligned to the %d-byte sector", r.Kind, r.Offset, r.Length, ss)
		}
		if r.Offset+r.Length > d.Size || r.Offset+r.Length < r.Offset {
			return fmt.Errorf("%s [%d,+%d) past the end of device %d (%d bytes)", r.Kind, r.Offset, r.Length, d.ID, d.Size)
		}
		if r.Kind == KindWrite && int64(len(r.Data)) != r.Length {
			return fmt.Errorf("WRITE carries %d data bytes for length %d", len(r.Data), r.Length)
		}
	case KindFlush:
		// The offset has no durability meaning (see Record): any aligned, non-negative value.
		if ss := int64(d.SectorSize); r.Length != 0 || r.Offset < 0 || r.Offset%ss != 0 {
			return fmt.Errorf("FLUSH with offset %d length %d (want length 0 and an offset aligned to the %d-byte sector)", r.Offset, r.Length, ss)
		}
	case KindMark:
		if r.Offset != 0 || r.Length != 0 {
			return fmt.Errorf("%s with offset %d length %d", r.Kind, r.Offset, r.Length)
		}
		if r.Submit != r.Complete {
			return fmt.Errorf("MARK %q with submit %d != complete %d", r.Name, r.Submit, r.Complete)
		}
	default:
		return fmt.Errorf("unknown kind %d", uint8(r.Kind))
	}
	return nil
}

func encodeRecHeader(b []byte, r *Record, payloadLen int) {
	binary.LittleEndian.PutUint32(b[0:], recMagic)
	b[4] = byte(r.Kind)
	b[5] = byte(r.Flags)
	binary.LittleEndian.PutUint16(b[6:], r.Device)
	binary.LittleEndian.PutUint32(b[8:], uint32(payloadLen))
	binary.LittleEndian.PutUint64(b[12:], r.Submit)
	binary.LittleEndian.PutUint64(b[20:], r.Complete)
	binary.LittleEndian.PutUint64(b[28:], uint64(r.Offset))
	binary.LittleEndian.PutUint64(b[36:], uint64(r.Length))
}

func encodeHeader(h *Header) ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 16+len(js))
	b = append(b, Magic[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(js)))
	b = append(b, js...)
	b = binary.LittleEndian.AppendUint32(b, CRC32C(js))
	return b, nil
}

// HashBase reads a whole base image and returns its size and the content hash a BaseRef records
// for it ("xxh3-128:<hex>"). Every recorder and importer uses it, and explore and replay check a
// given --base against it, so a wrong or modified base is refused rather than silently used.
func HashBase(r io.Reader) (int64, string, error) {
	h := xxh3.New128()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	if err != nil {
		return n, "", fmt.Errorf("hash base image: %w", err)
	}
	sum := h.Sum128().Bytes()
	return n, "xxh3-128:" + hex.EncodeToString(sum[:]), nil
}
