// Package nbdproto holds the wire constants and header codecs of the NBD protocol (fixed
// newstyle negotiation and the transmission phase, as in NetworkBlockDevice/nbd doc/proto.md),
// shared by our server (internal/nbd) and client (internal/nbdclient).
//
// It only encodes and decodes fixed-size headers; what to send when, and what to do with what
// was received, is the server's and the client's business. All integers are big-endian.
package nbdproto

import (
	"encoding/binary"
	"fmt"
)

// Handshake magic numbers.
const (
	NBDMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	IHaveOpt      = 0x49484156454F5054 // "IHAVEOPT": newstyle greeting, and every option request
	OldstyleMagic = 0x00420281861253   // oldstyle greeting (not supported)
	OptReplyMagic = 0x3e889045565a9
)

// Handshake flags: the server's (u16 in the greeting) and the client's (u32 reply).
const (
	FlagFixedNewstyle   = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes        = 1 << 1 // NBD_FLAG_NO_ZEROES
	ClientFixedNewstyle = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	ClientNoZeroes      = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// Options (NBD_OPT_*).
const (
	OptExportName      = 1
	OptAbort           = 2
	OptList            = 3
	OptStartTLS        = 5
	OptInfo            = 6
	OptGo              = 7
	OptStructuredReply = 8
)

// Option reply types (NBD_REP_*) and information types (NBD_INFO_*).
const (
	RepAck         = 1
	RepServer      = 2
	RepInfo        = 3
	RepFlagError   = 1 << 31 // set in every error reply type
	RepErrUnsup    = RepFlagError + 1
	RepErrPolicy   = RepFlagError + 2
	RepErrInvalid  = RepFlagError + 3
	RepErrUnknown  = RepFlagError + 6
	RepErrShutdown = RepFlagError + 7
	RepErrTooBig   = RepFlagError + 9

	InfoExport      = 0
	InfoName        = 1
	InfoDescription = 2
	InfoBlockSize   = 3
)

// Transmission flags (NBD_FLAG_*), sent with the export size.
const (
	TFlagHasFlags     = 1 << 0
	TFlagReadOnly     = 1 << 1
	TFlagSendFlush    = 1 << 2
	TFlagSendFUA      = 1 << 3
	TFlagSendTrim     = 1 << 5
	TFlagSendZeroes   = 1 << 6
	TFlagCanMultiConn = 1 << 8
	TFlagSendCache    = 1 << 10
	TFlagSendFastZero = 1 << 11
)

// Header magics and sizes.
const (
	RequestMagic         = 0x25609513
	SimpleReplyMagic     = 0x67446698
	StructuredReplyMagic = 0x668e33ef

	GreetingSize         = 18 // NBDMAGIC, IHAVEOPT, u16 handshake flags
	OptionHeaderSize     = 16 // IHAVEOPT, u32 option, u32 length
	OptReplyHeaderSize   = 20 // magic, u32 option, u32 type, u32 length
	RequestSize          = 28 // magic, u16 flags, u16 type, u64 cookie, u64 offset, u32 length
	SimpleReplySize      = 16 // magic, u32 error, u64 cookie
	StructuredHeaderSize = 20 // magic, u16 flags, u16 type, u64 cookie, u32 length
)

// Commands (NBD_CMD_*), command flags (NBD_CMD_FLAG_*) and structured reply chunks.
const (
	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdCache       = 5
	CmdWriteZeroes = 6

	CmdFlagFUA      = 1 << 0
	CmdFlagNoHole   = 1 << 1
	CmdFlagDF       = 1 << 2
	CmdFlagFastZero = 1 << 4

	ReplyFlagDone       = 1 << 0
	ReplyTypeNone       = 0
	ReplyTypeOffsetData = 1
	ReplyTypeError      = 1<<15 + 1
)

// NBD error numbers (the protocol's own values, equal to Linux errno).
const (
	ErrPerm     = 1
	ErrIO       = 5
	ErrNoMem    = 12
	ErrInval    = 22
	ErrNoSpc    = 28
	ErrOverflow = 75
	ErrNotSup   = 95
	ErrShutdown = 108
)

var be = binary.BigEndian

// CmdName names a command for messages ("UNKNOWN" for a type the protocol does not define).
func CmdName(t uint16) string {
	switch t {
	case CmdRead:
		return "READ"
	case CmdWrite:
		return "WRITE"
	case CmdDisc:
		return "DISC"
	case CmdFlush:
		return "FLUSH"
	case CmdTrim:
		return "TRIM"
	case CmdCache:
		return "CACHE"
	case CmdWriteZeroes:
		return "WRITE_ZEROES"
	}
	return "UNKNOWN"
}

// ErrnoName names an NBD error number ("EIO"), or returns "" for one the protocol does not define.
func ErrnoName(e uint32) string {
	switch e {
	case ErrPerm:
		return "EPERM"
	case ErrIO:
		return "EIO"
	case ErrNoMem:
		return "ENOMEM"
	case ErrInval:
		return "EINVAL"
	case ErrNoSpc:
		return "ENOSPC"
	case ErrOverflow:
		return "EOVERFLOW"
	case ErrNotSup:
		return "ENOTSUP"
	case ErrShutdown:
		return "ESHUTDOWN"
	}
	return ""
}

// PutGreeting encodes the newstyle greeting with handshake flags into b[:GreetingSize].
func PutGreeting(b []byte, flags uint16) {
	be.PutUint64(b[0:], NBDMagic)
	be.PutUint64(b[8:], IHaveOpt)
	be.PutUint16(b[16:], flags)
}

// AppendOption appends an option request (header and data) to b.
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = be.AppendUint64(b, IHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseOptionHeader decodes b[:OptionHeaderSize], an option request header.
func ParseOptionHeader(b []byte) (opt, length uint32, err error) {
	if m := be.Uint64(b[0:]); m != IHaveOpt {
		return 0, 0, fmt.Errorf("bad option magic %#x", m)
	}
	return be.Uint32(b[8:]), be.Uint32(b[12:]), nil
}

// PutOptReplyHeader encodes an option reply header into b[:OptReplyHeaderSize].
func PutOptReplyHeader(b []byte, opt, typ, length uint32) {
	be.PutUint64(b[0:], OptReplyMagic)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], typ)
	be.PutUint32(b[16:], length)
}

// ParseOptReplyHeader decodes b[:OptReplyHeaderSize], an option reply header.
func ParseOptReplyHeader(b []byte) (opt, typ, length uint32, err error) {
	if m := be.Uint64(b[0:]); m != OptReplyMagic {
		return 0, 0, 0, fmt.Errorf("bad option reply magic %#x", m)
	}
	return be.Uint32(b[8:]), be.Uint32(b[12:]), be.Uint32(b[16:]), nil
}

// Request is a transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// PutRequest encodes r into b[:RequestSize].
func PutRequest(b []byte, r Request) {
	be.PutUint32(b[0:], RequestMagic)
	be.PutUint16(b[4:], r.Flags)
	be.PutUint16(b[6:], r.Type)
	be.PutUint64(b[8:], r.Cookie)
	be.PutUint64(b[16:], r.Offset)
	be.PutUint32(b[24:], r.Length)
}

// ParseRequest decodes b[:RequestSize].
func ParseRequest(b []byte) (Request, error) {
	if m := be.Uint32(b); m != RequestMagic {
		return Request{}, fmt.Errorf("bad request magic %#x", m)
	}
	return Request{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Cookie: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]),
		Length: be.Uint32(b[24:]),
	}, nil
}

// PutSimpleReply encodes a simple reply header into b[:SimpleReplySize].
func PutSimpleReply(b []byte, errno uint32, cookie uint64) {
	be.PutUint32(b[0:], SimpleReplyMagic)
	be.PutUint32(b[4:], errno)
	be.PutUint64(b[8:], cookie)
}

// ParseSimpleReply decodes the error and cookie of a simple reply header b[:SimpleReplySize]
// whose magic (be.Uint32(b)) the caller has checked.
func ParseSimpleReply(b []byte) (errno uint32, cookie uint64) {
	return be.Uint32(b[4:]), be.Uint64(b[8:])
}

// PutChunkHeader encodes a structured reply chunk header into b[:StructuredHeaderSize].
func PutChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	be.PutUint32(b[0:], StructuredReplyMagic)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], cookie)
	be.PutUint32(b[16:], length)
}
