package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// connBudget bounds the payload bytes of the requests in flight on one connection, so a client
// queueing thousands of 32 MiB writes cannot exhaust memory: the reader waits for replies.
const connBudget = 64 << 20

// minCharge is what a request without payload costs against the budget; it bounds the number
// of goroutines in flight on a connection to connBudget/minCharge.
const minCharge = 64 << 10

// conn is one client connection.
type conn struct {
	srv        *Server
	nc         net.Conn // nil when serving a plain stream
	r          *bufio.Reader
	out        replyWriter
	exp        *Export
	structured bool
	wg         sync.WaitGroup
	budget     byteSem
	stopping   atomic.Bool
}

func newStreamConn(s *Server, rw io.ReadWriter, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, r: bufio.NewReaderSize(rw, 128<<10)}
	c.out.w = bufio.NewWriterSize(rw, 128<<10)
	c.out.c = c
	c.budget.limit = connBudget
	c.budget.cond.L = &c.budget.mu
	return c
}

// stopReading makes the reader see the end of the stream: requests already read are still
// served and replied to.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	if c.nc == nil {
		return
	}
	// A client that stopped reading must not keep the server from shutting down.
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if cr, ok := c.nc.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now())
}

func (c *conn) serve() error {
	if c.nc != nil {
		defer c.nc.Close()
	}
	sess, err := c.srv.handshake(c.r, c.out.w)
	if err != nil {
		if c.stopping.Load() || errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("handshake: %w", err)
	}
	c.exp, c.structured = sess.export, sess.structured
	err = c.transmit()
	// A soft or hard disconnect still lets requests in flight finish: their effects are in the
	// store and the log, and the client may yet read the replies.
	c.wg.Wait()
	c.out.lock()
	c.out.unlock()
	return err
}

// request is one parsed request; pooled with its payload buffer.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
	buf    *[]byte
	charge int64
	rec    pclog.Record
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// parseRequest decodes a 28-byte request header.
func parseRequest(b []byte, req *request) error {
	r, err := nbdproto.ParseRequest(b)
	if err != nil {
		return err
	}
	req.flags, req.typ, req.cookie, req.offset, req.length = r.Flags, r.Type, r.Cookie, r.Offset, r.Length
	return nil
}

// checkRequest validates a request against an export of size bytes and minimum block size bs.
// It returns 0 or the NBD error to reply with, and a message for structured error replies.
func checkRequest(flags, typ uint16, off uint64, length uint32, size, bs int64) (uint32, string) {
	allowed := uint16(nbdproto.CmdFlagFUA) // FUA is valid (and may be ignored) on every command
	switch typ {
	case nbdproto.CmdRead, nbdproto.CmdWrite, nbdproto.CmdTrim, nbdproto.CmdCache:
	case nbdproto.CmdFlush:
		if off != 0 || length != 0 {
			return nbdproto.ErrInval, "FLUSH with nonzero offset or length"
		}
	case nbdproto.CmdWriteZeroes:
		allowed |= nbdproto.CmdFlagNoHole | nbdproto.CmdFlagFastZero
	default:
		return nbdproto.ErrInval, fmt.Sprintf("unknown command %d", typ)
	}
	if flags&^allowed != 0 {
		return nbdproto.ErrInval, fmt.Sprintf("flags %#x not valid for %s", flags&^allowed, nbdproto.CmdName(typ))
	}
	if typ == nbdproto.CmdFlush {
		return 0, ""
	}
	if length == 0 {
		return nbdproto.ErrInval, nbdproto.CmdName(typ) + " of length 0"
	}
	if (typ == nbdproto.CmdRead || typ == nbdproto.CmdWrite) && length > MaxPayload {
		return nbdproto.ErrInval, fmt.Sprintf("%s of %d bytes exceeds the maximum block size %d", nbdproto.CmdName(typ), length, MaxPayload)
	}
	if off > uint64(size) || uint64(length) > uint64(size)-off {
		if typ == nbdproto.CmdWrite || typ == nbdproto.CmdWriteZeroes {
			return nbdproto.ErrNoSpc, fmt.Sprintf("%s [%d,+%d) past the end of the %d-byte export", nbdproto.CmdName(typ), off, length, size)
		}
		return nbdproto.ErrInval, fmt.Sprintf("%s [%d,+%d) past the end of the %d-byte export", nbdproto.CmdName(typ), off, length, size)
	}
	if off%uint64(bs) != 0 || uint64(length)%uint64(bs) != 0 {
		return nbdproto.ErrInval, fmt.Sprintf("%s [%d,+%d) not aligned to the %d-byte block size", nbdproto.CmdName(typ), off, length, bs)
	}
	return 0, ""
}

// transmit reads requests until the client disconnects, dispatching each to its own goroutine.
func (c *conn) transmit() error {
	var hdr [nbdproto.RequestSize]byte
	e := c.exp
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			if err == io.EOF || c.stopping.Load() {
				return nil
			}
			return fmt.Errorf("read request: %w", err)
		}
		req := requestPool.Get().(*request)
		if err := parseRequest(hdr[:], req); err != nil {
			// Without the magic we cannot find the next request: hard disconnect.
			requestPool.Put(req)
			return err
		}
		if req.typ == nbdproto.CmdDisc {
			requestPool.Put(req)
			return nil
		}
		errno, msg := checkRequest(req.flags, req.typ, req.offset, req.length, e.Size, int64(e.BlockSize))
		if req.typ == nbdproto.CmdWrite {
			if req.length > MaxPayload {
				// The payload cannot be skipped safely (it may be a desynchronised stream):
				// answer and drop the connection, as the protocol allows.
				c.replyError(req, nbdproto.ErrInval, msg)
				requestPool.Put(req)
				return fmt.Errorf("WRITE of %d bytes exceeds the maximum %d: disconnecting", req.length, MaxPayload)
			}
			req.charge = max(int64(req.length), minCharge)
			c.budget.acquire(req.charge)
			req.buf = getBuf(int(req.length))
			if _, err := io.ReadFull(c.r, *req.buf); err != nil {
				c.release(req)
				if c.stopping.Load() {
					return nil
				}
				return fmt.Errorf("read WRITE payload: %w", err)
			}
		}
		if errno != 0 {
			c.replyError(req, errno, msg)
			c.release(req)
			continue
		}
		if req.typ != nbdproto.CmdWrite {
			req.charge = minCharge
			if req.typ == nbdproto.CmdRead {
				req.charge = max(int64(req.length), minCharge)
			}
			c.budget.acquire(req.charge)
		}
		c.wg.Add(1)
		go c.handle(req)
	}
}

func (c *conn) release(req *request) {
	if req.buf != nil {
		putBuf(req.buf)
		req.buf = nil
	}
	if req.charge > 0 {
		c.budget.release(req.charge)
		req.charge = 0
	}
	req.rec = pclog.Record{}
	requestPool.Put(req)
}

// handle carries out one valid request and replies. For a recorded export the modifying
// commands go through Device.Do: submit is taken here (after the request was received) and
// completion, with the log record (synced for FLUSH and FUA), before the reply is sent.
func (c *conn) handle(req *request) {
	defer c.wg.Done()
	defer c.release(req)
	e := c.exp
	off := int64(req.offset)
	n := int64(req.length)
	fua := req.flags&nbdproto.CmdFlagFUA != 0
	var fl pclog.Flags
	if fua {
		fl = pclog.FlagFUA
	}
	var err error
	switch req.typ {
	case nbdproto.CmdRead:
		if e.stopped() {
			c.replyError(req, nbdproto.ErrIO, "device stopped (simulated power cut)")
			return
		}
		req.buf = getBuf(int(n))
		if _, err = e.Store.ReadAt(*req.buf, off); err == nil {
			c.replyRead(req, *req.buf)
			return
		}
	case nbdproto.CmdWrite:
		data := *req.buf
		req.rec = pclog.Record{Kind: pclog.KindWrite, Flags: fl, Offset: off, Length: n, Data: data}
		err = e.do(&req.rec, func() error {
			if _, err := e.Store.WriteAt(data, off); err != nil {
				return err
			}
			if fua {
				return e.Store.Sync()
			}
			return nil
		})
	case nbdproto.CmdWriteZeroes:
		if req.flags&nbdproto.CmdFlagFastZero != 0 && !e.FastZero {
			c.replyError(req, nbdproto.ErrNotSup, "fast zero not supported by this backing store")
			return
		}
		req.rec = pclog.Record{Kind: pclog.KindWriteZeroes, Flags: fl, Offset: off, Length: n}
		err = e.do(&req.rec, func() error { return e.zero(off, n, fua) })
	case nbdproto.CmdTrim:
		req.rec = pclog.Record{Kind: pclog.KindDiscard, Flags: fl, Offset: off, Length: n}
		err = e.do(&req.rec, func() error { return e.zero(off, n, fua) })
	case nbdproto.CmdFlush:
		req.rec = pclog.Record{Kind: pclog.KindFlush}
		err = e.do(&req.rec, e.Store.Sync)
	case nbdproto.CmdCache:
		// Memory and page-cache backed stores have nothing to prefetch.
		if e.stopped() {
			err = record.ErrStopped
		}
	}
	if err != nil {
		c.failed(req, err)
		return
	}
	c.replyOK(req)
}

func (e *Export) zero(off, n int64, fua bool) error {
	if err := e.Store.Zero(off, n); err != nil {
		return err
	}
	if fua {
		return e.Store.Sync()
	}
	return nil
}

func (e *Export) do(rec *pclog.Record, fn func() error) error {
	if ps, ok := e.Store.(*ProxyStore); ok {
		fn = func() error { return ps.forward(rec) } // the request passes on whole (proxy.go)
	}
	if e.Device == nil {
		return fn()
	}
	return e.Device.Do(rec, fn)
}

// failed replies to a request whose operation or log record failed: ENOSPC when the log or
// store is full, EIO otherwise (including the simulated power cut). The server keeps serving.
func (c *conn) failed(req *request, err error) {
	errno := uint32(nbdproto.ErrIO)
	if errors.Is(err, syscall.ENOSPC) {
		errno = nbdproto.ErrNoSpc
	}
	if !errors.Is(err, record.ErrStopped) {
		if k := c.srv.failures.Add(1); k <= 10 {
			c.srv.logf("nbd: %s [%d,+%d) on export %q failed: %v", nbdproto.CmdName(req.typ), req.offset, req.length, c.exp.Name, err)
		} else if k == 11 {
			c.srv.logf("nbd: more requests failed; not reporting each")
		}
	}
	c.replyError(req, errno, err.Error())
}

// replyWriter serialises replies; it flushes its buffer only when no other reply is waiting
// for the lock, so a burst of completions goes out in one write.
type replyWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	c       *conn
	waiting atomic.Int32
	err     error
	hdr     [32]byte
}

func (rw *replyWriter) lock() {
	rw.waiting.Add(1)
	rw.mu.Lock()
	rw.waiting.Add(-1)
}

func (rw *replyWriter) unlock() {
	if rw.err == nil && rw.waiting.Load() == 0 {
		if err := rw.w.Flush(); err != nil {
			rw.setErr(err)
		}
	}
	rw.mu.Unlock()
}

func (rw *replyWriter) write(p []byte) {
	if rw.err != nil {
		return
	}
	if _, err := rw.w.Write(p); err != nil {
		rw.setErr(err)
	}
}

// setErr records a broken connection and stops the reader: no reply can reach the client.
func (rw *replyWriter) setErr(err error) {
	rw.err = err
	if rw.c != nil {
		rw.c.stopReading()
	}
}

func (c *conn) simpleHeader(errno uint32, cookie uint64) []byte {
	h := c.out.hdr[:nbdproto.SimpleReplySize]
	nbdproto.PutSimpleReply(h, errno, cookie)
	return h
}

func (c *conn) chunkHeader(flags, typ uint16, cookie uint64, length uint32) []byte {
	h := c.out.hdr[:nbdproto.StructuredHeaderSize]
	nbdproto.PutChunkHeader(h, flags, typ, cookie, length)
	return h
}

func (c *conn) replyOK(req *request) {
	c.out.lock()
	c.out.write(c.simpleHeader(0, req.cookie))
	c.out.unlock()
}

func (c *conn) replyRead(req *request, data []byte) {
	c.out.lock()
	if c.structured {
		c.out.write(c.chunkHeader(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeOffsetData, req.cookie, uint32(8+len(data))))
		var o [8]byte
		be.PutUint64(o[:], req.offset)
		c.out.write(o[:])
	} else {
		c.out.write(c.simpleHeader(0, req.cookie))
	}
	c.out.write(data)
	c.out.unlock()
}

// replyError sends an error reply; with structured replies negotiated it is an ERROR chunk
// carrying msg (mandatory for READ, preferred for the rest).
func (c *conn) replyError(req *request, errno uint32, msg string) {
	c.out.lock()
	if c.structured {
		if len(msg) > 4096 {
			msg = msg[:4096]
		}
		c.out.write(c.chunkHeader(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeError, req.cookie, uint32(6+len(msg))))
		var p [6]byte
		be.PutUint32(p[0:], errno)
		be.PutUint16(p[4:], uint16(len(msg)))
		c.out.write(p[:])
		c.out.write([]byte(msg))
	} else {
		c.out.write(c.simpleHeader(errno, req.cookie))
	}
	c.out.unlock()
}

// byteSem is a counting semaphore over bytes; a request larger than the limit still runs when
// nothing else is in flight.
type byteSem struct {
	mu    sync.Mutex
	cond  sync.Cond
	used  int64
	limit int64
}

func (s *byteSem) acquire(n int64) {
	s.mu.Lock()
	for s.used > 0 && s.used+n > s.limit {
		s.cond.Wait()
	}
	s.used += n
	s.mu.Unlock()
}

func (s *byteSem) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Payload buffers come from per-size-class pools (4 KiB << i up to MaxPayload), so a steady
// stream of requests allocates nothing.
const numClasses = 14 // 4 KiB .. 32 MiB

var bufPools [numClasses]sync.Pool

func sizeClass(n int) int {
	c := 0
	for (4096 << c) < n {
		c++
	}
	return c
}

func getBuf(n int) *[]byte {
	c := sizeClass(n)
	if p, _ := bufPools[c].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 4096<<c)
	return &b
}

func putBuf(p *[]byte) {
	c := sizeClass(cap(*p))
	if c < numClasses && cap(*p) == 4096<<c {
		bufPools[c].Put(p)
	}
}
