package nbd

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/powercut/powercut/internal/nbdclient"
	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/pclog"
)

// ProxyStore is the store of a recording proxy: an export served with it (RecordedExport over a
// device whose store it is) records every request a client sends and passes it on, unchanged,
// to an upstream NBD server: a WRITE with FUA stays a WRITE with FUA, a FLUSH stays a FLUSH, a
// TRIM stays a TRIM. That is what auditing a layer needs: the recording is what the layer was
// asked to do, with the submit point taken before the layer saw the request and the completion
// point after the layer replied.
//
// Where the upstream lacks a command the proxy does what a kernel client of that server would:
// FUA without NBD_FLAG_SEND_FUA becomes WRITE then FLUSH; WRITE_ZEROES without SEND_WRITE_ZEROES
// writes zero buffers; TRIM without SEND_TRIM is dropped (a discard is advisory). A server
// without SEND_FLUSH declares it has no volatile cache: every write it acknowledges is durable,
// so the proxy records each write with FUA (the durability the server promised) and answers a
// FLUSH at once.
type ProxyStore struct {
	size int64
	up   atomic.Pointer[nbdclient.Client]
}

// NewProxyStore returns a proxy store of size bytes, not yet connected (Connect): the recording
// that uses it may have to exist before the upstream server can start.
func NewProxyStore(size int64) *ProxyStore { return &ProxyStore{size: size} }

// ErrProxyNotConnected: a request reached a proxy before Connect.
var ErrProxyNotConnected = errors.New("nbd proxy: upstream not connected")

// ErrProxySize: the upstream export's size differs from the proxy's.
var ErrProxySize = errors.New("nbd proxy: upstream export size differs")

// Connect sets the upstream connection; its export must have the proxy's size.
func (p *ProxyStore) Connect(c *nbdclient.Client) error {
	if c.Size() != p.size {
		return fmt.Errorf("%w: upstream has %d bytes, the proxy %d", ErrProxySize, c.Size(), p.size)
	}
	p.up.Store(c)
	return nil
}

func (p *ProxyStore) client() (*nbdclient.Client, error) {
	c := p.up.Load()
	if c == nil {
		return nil, ErrProxyNotConnected
	}
	return c, nil
}

// Size is the export size.
func (p *ProxyStore) Size() int64 { return p.size }

// ReadAt reads from upstream (reads are not recorded).
func (p *ProxyStore) ReadAt(b []byte, off int64) (int, error) {
	c, err := p.client()
	if err != nil {
		return 0, err
	}
	return c.ReadAt(b, off)
}

// WriteAt, Zero and Sync serve unrecorded use; a recorded export forwards whole requests.
func (p *ProxyStore) WriteAt(b []byte, off int64) (int, error) {
	return len(b), p.forward(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: int64(len(b)), Data: b})
}

// Zero forwards a WRITE_ZEROES.
func (p *ProxyStore) Zero(off, n int64) error {
	return p.forward(&pclog.Record{Kind: pclog.KindWriteZeroes, Offset: off, Length: n})
}

// Sync forwards a FLUSH.
func (p *ProxyStore) Sync() error { return p.forward(&pclog.Record{Kind: pclog.KindFlush}) }

// forward passes rec on to the upstream server as the same command with the same FUA flag. It
// may add FUA to rec (upstream without a volatile cache) before the record is completed.
func (p *ProxyStore) forward(rec *pclog.Record) error {
	c, err := p.client()
	if err != nil {
		return err
	}
	tf := c.Flags()
	canFlush, canFUA := tf&nbdproto.TFlagSendFlush != 0, tf&nbdproto.TFlagSendFUA != 0
	fua := rec.Flags&pclog.FlagFUA != 0
	var flags uint16
	if fua && canFUA {
		flags = nbdproto.CmdFlagFUA
	}
	if !canFlush && rec.Kind != pclog.KindFlush && rec.Kind != pclog.KindMark {
		rec.Flags |= pclog.FlagFUA
	}
	switch rec.Kind {
	case pclog.KindWrite:
		err = c.Command(nbdproto.CmdWrite, flags, rec.Offset, rec.Length, rec.Data)
	case pclog.KindWriteZeroes:
		if tf&nbdproto.TFlagSendZeroes != 0 {
			err = c.Command(nbdproto.CmdWriteZeroes, flags, rec.Offset, rec.Length, nil)
		} else {
			err = p.writeZeroBuffers(c, flags, rec.Offset, rec.Length)
		}
	case pclog.KindDiscard:
		if tf&nbdproto.TFlagSendTrim == 0 {
			return nil
		}
		err = c.Command(nbdproto.CmdTrim, flags, rec.Offset, rec.Length, nil)
	case pclog.KindFlush:
		if !canFlush {
			return nil
		}
		return c.Command(nbdproto.CmdFlush, 0, 0, 0, nil)
	default:
		return fmt.Errorf("nbd proxy: cannot forward %s", rec.Kind)
	}
	if err == nil && fua && !canFUA && canFlush {
		err = c.Command(nbdproto.CmdFlush, 0, 0, 0, nil)
	}
	return err
}

func (p *ProxyStore) writeZeroBuffers(c *nbdclient.Client, flags uint16, off, n int64) error {
	const chunk = 1 << 20
	z := make([]byte, min(n, chunk))
	for done := int64(0); done < n; {
		k := min(n-done, chunk)
		if err := c.Command(nbdproto.CmdWrite, flags, off+done, k, z[:k]); err != nil {
			return err
		}
		done += k
	}
	return nil
}
