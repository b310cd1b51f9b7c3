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

// The protocol's constants and header codecs are in internal/nbdproto, shared with the client.

// MaxPayload is the largest READ or WRITE payload served (the maximum block size advertised): 32
// MiB, what the protocol tells interoperable clients to stay below.
const MaxPayload = 32 << 20

var be = binary.BigEndian
