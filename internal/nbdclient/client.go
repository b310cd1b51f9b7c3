// Package nbdclient is a small NBD client: the fixed newstyle handshake with NBD_OPT_GO (falling
// back to NBD_OPT_EXPORT_NAME for old servers), then READ, WRITE, FLUSH, TRIM and WRITE_ZEROES
// with simple replies over one connection.
//
// Why our own: powercut verify must drive an NBD export (an nbdkit plugin, qemu-nbd, or powercut's
// own recording server) with many requests in flight, and the only other way there from Go is cgo
// into libnbd. Requests from concurrent callers are pipelined: each gets a cookie, one goroutine
// reads replies in whatever order the server sends them and wakes the caller.
package nbdclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
)

// DefaultPort is the IANA NBD port.
const DefaultPort = "10809"

// Error is an error reply from the server.
type Error struct {
	Op    string
	Off   int64
	Len   int
	Errno uint32
}

func (e *Error) Error() string {
	n := nbdproto.ErrnoName(e.Errno)
	if n == "" {
		n = fmt.Sprintf("errno %d", e.Errno)
	}
	return fmt.Sprintf("nbd %s [%d,+%d): server replied %s", e.Op, e.Off, e.Len, n)
}

// ErrUnsupported is returned for a command the export does not advertise.
var ErrUnsupported = errors.New("not supported by the export")

// Client is one NBD connection. Its methods are safe for concurrent use.
type Client struct {
	conn   net.Conn
	export string
	size   int64
	tflags uint16
	// Block size constraints advertised by the server (0 when not advertised).
	MinBlock, PrefBlock, MaxBlock uint32
	// ReplyTimeout bounds the wait for each reply (0: DefaultReplyTimeout); past it the
	// connection is failed, so a server that stops answering cannot hang the workload.
	ReplyTimeout time.Duration

	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	err     error // sticky: the connection is dead
	closed  bool
	done    chan struct{}
}

type call struct {
	op   string
	off  int64
	buf  []byte // READ destination
	n    int
	errc chan error
}

// DialURL connects to "nbd://host[:port][/export]" or "nbd+unix:///export?socket=/path".
func DialURL(s string) (*Client, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parse NBD URL %q: %w", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd":
		host := u.Host
		if host == "" {
			return nil, fmt.Errorf("NBD URL %q names no host", s)
		}
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), DefaultPort)
		}
		return Dial("tcp", host, export)
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return nil, fmt.Errorf("NBD URL %q: nbd+unix needs ?socket=PATH", s)
		}
		return Dial("unix", sock, export)
	}
	return nil, fmt.Errorf("NBD URL %q: unknown scheme %q (want nbd or nbd+unix)", s, u.Scheme)
}

// Dial connects and negotiates the export.
func Dial(network, addr, export string) (*Client, error) {
	conn, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to NBD server: %w", err)
	}
	c := &Client{conn: conn, export: export, pending: map[uint64]*call{}, done: make(chan struct{})}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("NBD handshake with %s (export %q): %w", addr, export, err)
	}
	conn.SetDeadline(time.Time{})
	c.bw = bufio.NewWriterSize(conn, 256<<10)
	go c.readLoop()
	return c, nil
}

func (c *Client) handshake() error {
	var b [nbdproto.GreetingSize]byte
	if _, err := io.ReadFull(c.conn, b[:]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(b[0:]); m != nbdproto.NBDMagic {
		return fmt.Errorf("not an NBD server (magic %#x)", m)
	}
	switch m := binary.BigEndian.Uint64(b[8:]); m {
	case nbdproto.IHaveOpt:
	case nbdproto.OldstyleMagic:
		return errors.New("server speaks the oldstyle protocol, which this client does not support")
	default:
		return fmt.Errorf("unexpected greeting magic %#x", m)
	}
	sflags := binary.BigEndian.Uint16(b[16:])
	if sflags&nbdproto.FlagFixedNewstyle == 0 {
		return errors.New("server does not offer the fixed newstyle handshake")
	}
	cflags := uint32(nbdproto.FlagFixedNewstyle)
	noZeroes := sflags&nbdproto.FlagNoZeroes != 0
	if noZeroes {
		cflags |= nbdproto.FlagNoZeroes
	}
	if err := binary.Write(c.conn, binary.BigEndian, cflags); err != nil {
		return err
	}
	// NBD_OPT_GO: name, one information request (block size).
	data := binary.BigEndian.AppendUint32(nil, uint32(len(c.export)))
	data = append(data, c.export...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, nbdproto.InfoBlockSize)
	if err := c.sendOpt(nbdproto.OptGo, data); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, rep, err := c.readOptReply(nbdproto.OptGo)
		if err != nil {
			return err
		}
		switch {
		case typ == nbdproto.RepAck:
			if !gotExport {
				return errors.New("server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT")
			}
			return nil
		case typ == nbdproto.RepInfo:
			if len(rep) < 2 {
				return errors.New("short NBD_REP_INFO")
			}
			switch binary.BigEndian.Uint16(rep) {
			case nbdproto.InfoExport:
				if len(rep) < 12 {
					return errors.New("short NBD_INFO_EXPORT")
				}
				c.size = int64(binary.BigEndian.Uint64(rep[2:]))
				c.tflags = binary.BigEndian.Uint16(rep[10:])
				gotExport = true
			case nbdproto.InfoBlockSize:
				if len(rep) >= 14 {
					c.MinBlock = binary.BigEndian.Uint32(rep[2:])
					c.PrefBlock = binary.BigEndian.Uint32(rep[6:])
					c.MaxBlock = binary.BigEndian.Uint32(rep[10:])
				}
			}
		case typ == nbdproto.RepErrUnsup:
			return c.exportName(noZeroes)
		case typ&nbdproto.RepFlagError != 0:
			return fmt.Errorf("server refused export %q: error %#x %s", c.export, typ, strings.TrimSpace(string(rep)))
		}
	}
}

// exportName is the pre-GO way to select an export (no error reporting: the server just closes).
func (c *Client) exportName(noZeroes bool) error {
	if err := c.sendOpt(nbdproto.OptExportName, []byte(c.export)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.conn, b); err != nil {
		return fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w (does the export exist?)", c.export, err)
	}
	c.size = int64(binary.BigEndian.Uint64(b))
	c.tflags = binary.BigEndian.Uint16(b[8:])
	return nil
}

func (c *Client) sendOpt(opt uint32, data []byte) error {
	_, err := c.conn.Write(nbdproto.AppendOption(nil, opt, data))
	return err
}

func (c *Client) readOptReply(opt uint32) (uint32, []byte, error) {
	var h [nbdproto.OptReplyHeaderSize]byte
	if _, err := io.ReadFull(c.conn, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	o, typ, n, err := nbdproto.ParseOptReplyHeader(h[:])
	if err != nil {
		return 0, nil, err
	}
	if o != opt {
		return 0, nil, fmt.Errorf("option reply for option %d, expected %d", o, opt)
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("option reply of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.conn, data); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	return typ, data, nil
}

// Size is the export size in bytes.
func (c *Client) Size() int64 { return c.size }

// ExportName is the export negotiated.
func (c *Client) ExportName() string { return c.export }

// Flags are the transmission flags.
func (c *Client) Flags() uint16 { return c.tflags }

func (c *Client) readLoop() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.conn, 256<<10)
	var h [nbdproto.SimpleReplySize]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			c.fail(fmt.Errorf("nbd connection: read reply: %w", err))
			return
		}
		magic := binary.BigEndian.Uint32(h[0:])
		if magic != nbdproto.SimpleReplyMagic {
			if magic == nbdproto.StructuredReplyMagic {
				c.fail(errors.New("nbd connection: server sent a structured reply, which was not negotiated"))
			} else {
				c.fail(fmt.Errorf("nbd connection: bad reply magic %#x", magic))
			}
			return
		}
		errno, cookie := nbdproto.ParseSimpleReply(h[:])
		c.mu.Lock()
		cl := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("nbd connection: reply for unknown cookie %d", cookie))
			return
		}
		if errno != 0 {
			cl.errc <- &Error{Op: cl.op, Off: cl.off, Len: cl.n, Errno: errno}
			continue
		}
		if cl.buf != nil {
			if _, err := io.ReadFull(br, cl.buf); err != nil {
				err = fmt.Errorf("nbd connection: read data of %s [%d,+%d): %w", cl.op, cl.off, cl.n, err)
				cl.errc <- err
				c.fail(err)
				return
			}
		}
		cl.errc <- nil
	}
}

// fail marks the connection dead and fails every pending request.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		if c.closed {
			err = net.ErrClosed
		}
		c.err = err
	}
	for k, cl := range c.pending {
		cl.errc <- c.err
		delete(c.pending, k)
	}
	c.mu.Unlock()
	c.conn.Close()
}

func (c *Client) do(op string, typ, flags uint16, off int64, n int, payload, dst []byte) error {
	if off < 0 || off+int64(n) > c.size {
		return fmt.Errorf("nbd %s [%d,+%d): outside the %d-byte export", op, off, n, c.size)
	}
	if c.MaxBlock != 0 && (typ == nbdproto.CmdRead || typ == nbdproto.CmdWrite) && uint32(n) > c.MaxBlock {
		return fmt.Errorf("nbd %s of %d bytes exceeds the server's maximum block size %d", op, n, c.MaxBlock)
	}
	cl := &call{op: op, off: off, n: n, buf: dst, errc: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	c.mu.Unlock()

	var h [nbdproto.RequestSize]byte
	nbdproto.PutRequest(h[:], nbdproto.Request{Flags: flags, Type: typ, Cookie: cookie, Offset: uint64(off), Length: uint32(n)})
	c.wmu.Lock()
	_, err := c.bw.Write(h[:])
	if err == nil && payload != nil {
		_, err = c.bw.Write(payload)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd connection: send %s: %w", op, err))
	}
	timeout := c.ReplyTimeout
	if timeout == 0 {
		timeout = DefaultReplyTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-cl.errc:
		return err
	case <-t.C:
		// A server that stopped answering: fail this and every pending request rather than
		// wait forever (the connection is closed).
		c.fail(fmt.Errorf("nbd %s [%d,+%d): no reply within %v", op, off, n, timeout))
		return <-cl.errc
	}
}

// DefaultReplyTimeout bounds the wait for one reply when Client.ReplyTimeout is zero.
const DefaultReplyTimeout = 2 * time.Minute

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := c.do("READ", nbdproto.CmdRead, 0, off, len(p), nil, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p at off (not durable until Flush).
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if c.tflags&nbdproto.TFlagReadOnly != 0 {
		return 0, fmt.Errorf("nbd WRITE [%d,+%d): export is read-only", off, len(p))
	}
	if err := c.do("WRITE", nbdproto.CmdWrite, 0, off, len(p), p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteFUA writes p at off with the FUA flag (durable when it returns).
func (c *Client) WriteFUA(p []byte, off int64) error {
	if c.tflags&nbdproto.TFlagSendFUA == 0 {
		return fmt.Errorf("nbd WRITE+FUA: %w", ErrUnsupported)
	}
	return c.do("WRITE", nbdproto.CmdWrite, nbdproto.CmdFlagFUA, off, len(p), p, nil)
}

// Flush asks the server to persist every write it replied to before it processes the flush.
func (c *Client) Flush() error {
	if c.tflags&nbdproto.TFlagSendFlush == 0 {
		return fmt.Errorf("nbd FLUSH: %w", ErrUnsupported)
	}
	return c.do("FLUSH", nbdproto.CmdFlush, 0, 0, 0, nil, nil)
}

// Trim discards [off, off+n).
func (c *Client) Trim(off, n int64) error {
	if c.tflags&nbdproto.TFlagSendTrim == 0 {
		return fmt.Errorf("nbd TRIM: %w", ErrUnsupported)
	}
	return c.do("TRIM", nbdproto.CmdTrim, 0, off, int(n), nil, nil)
}

// WriteZeroes zeroes [off, off+n); when the export lacks WRITE_ZEROES it writes zero buffers.
func (c *Client) WriteZeroes(off, n int64) error {
	if c.tflags&nbdproto.TFlagSendZeroes == 0 {
		_, err := c.WriteAt(make([]byte, n), off)
		return err
	}
	return c.do("WRITE_ZEROES", nbdproto.CmdWriteZeroes, 0, off, int(n), nil, nil)
}

// Close sends NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	dead := c.err != nil
	c.mu.Unlock()
	if !dead {
		var h [nbdproto.RequestSize]byte
		nbdproto.PutRequest(h[:], nbdproto.Request{Type: nbdproto.CmdDisc})
		c.wmu.Lock()
		c.bw.Write(h[:])
		c.bw.Flush()
		c.wmu.Unlock()
	}
	err := c.conn.Close()
	<-c.done
	if dead || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
