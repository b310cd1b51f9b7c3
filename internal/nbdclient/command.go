package nbdclient

import (
	"fmt"

	"github.com/powercut/powercut/internal/nbdproto"
)

// Command sends one modifying request with its flags as given (WRITE, WRITE_ZEROES, TRIM or
// FLUSH with FUA, NO_HOLE...): a proxy that must pass a client's request on unchanged uses it
// instead of the typed helpers, which choose the flags themselves. payload is the WRITE data.
func (c *Client) Command(typ, flags uint16, off int64, n int64, payload []byte) error {
	switch typ {
	case nbdproto.CmdWrite, nbdproto.CmdWriteZeroes, nbdproto.CmdTrim, nbdproto.CmdFlush:
	default:
		return fmt.Errorf("nbd %s: not a modifying command", nbdproto.CmdName(typ))
	}
	if typ == nbdproto.CmdWrite && int64(len(payload)) != n {
		return fmt.Errorf("nbd WRITE [%d,+%d): payload of %d bytes", off, n, len(payload))
	}
	if typ != nbdproto.CmdWrite {
		payload = nil
	}
	return c.do(nbdproto.CmdName(typ), typ, flags, off, int(n), payload, nil)
}
