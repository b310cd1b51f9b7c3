// Package nbd is powercut's NBD server: it serves block devices over the Network Block Device
// protocol (fixed newstyle, as in NetworkBlockDevice/nbd doc/proto.md) and, when an export is
// backed by a record.Device, records every WRITE, WRITE_ZEROES, TRIM and FLUSH with exact submit
// and completion sequence numbers.
//
// Why a server of our own: no Go NBD library supports FLUSH, FUA and TRIM, and the recorder must
// control exactly when a request is submitted (when it is received), when it completes (before
// its reply), and that a FLUSH or FUA reply is sent only once its log record is on stable storage.
//
// Requests on one connection are served concurrently and replied to out of order: one reader
// goroutine parses requests, a goroutine per request carries it out, and replies are written
// under a mutex into a buffered writer that is flushed whenever no other reply is waiting.
package nbd

import "encoding/binary"

// Handshake magic numbers and flags.
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	ihaveOpt       = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic  = 0x3e889045565a9
	flagFixedNew   = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes   = 1 << 1 // NBD_FLAG_NO_ZEROES
	clientFixedNew = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	clientNoZeroes = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// Options.
const (
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructuredRply = 8
)

// Option reply types.
const (
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repErrUnsup     = 1<<31 + 1
	repErrPolicy    = 1<<31 + 2
	repErrInvalid   = 1<<31 + 3
	repErrUnknown   = 1<<31 + 6
	repErrShutdown  = 1<<31 + 7
	repErrTooBig    = 1<<31 + 9
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tfHasFlags     = 1 << 0
	tfReadOnly     = 1 << 1
	tfSendFlush    = 1 << 2
	tfSendFUA      = 1 << 3
	tfSendTrim     = 1 << 5
	tfSendZeroes   = 1 << 6
	tfCanMultiConn = 1 << 8
	tfSendCache    = 1 << 10
	tfSendFastZero = 1 << 11
)

// Requests.
const (
	requestMagic    = 0x25609513
	requestSize     = 28
	simpleReplyMag  = 0x67446698
	structReplyMag  = 0x668e33ef
	simpleReplySize = 16
	structHdrSize   = 20

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagFastZero = 1 << 4

	replyFlagDone       = 1 << 0
	replyTypeNone       = 0
	replyTypeOffsetData = 1
	replyTypeError      = 1<<15 + 1
)

// NBD error numbers (the protocol's own values, equal to Linux errno).
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// MaxPayload is the largest READ or WRITE payload served (the maximum block size advertised): 32
// MiB, what the protocol tells interoperable clients to stay below.
const MaxPayload = 32 << 20

var be = binary.BigEndian

// cmdName names a command for messages.
func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	}
	return "UNKNOWN"
}
