package nbdclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
)

// scriptConn is the client's end of a connection to a scripted hostile server. During the
// handshake it serves hs and then EOF (so an incomplete handshake fails instead of waiting);
// in the transmission phase it holds back data until release, so that the replies are read
// only after every request was sent (cookies 1, 2, 3 in order), then serves data and EOF.
type scriptConn struct {
	mu       sync.Mutex
	cond     sync.Cond
	hs, data []byte
	phase2   bool
	released bool
	closed   bool
	wrote    chan struct{} // one token per Write in the transmission phase
}

func newScriptConn(hs []byte) *scriptConn {
	c := &scriptConn{hs: hs, wrote: make(chan struct{}, 64)}
	c.cond.L = &c.mu
	return c
}

// transmission switches to the transmission phase: what is left of the handshake bytes is
// followed by replies, released later.
func (c *scriptConn) transmission(replies []byte) {
	c.mu.Lock()
	c.data = append(append([]byte(nil), c.hs...), replies...)
	c.hs, c.phase2 = nil, true
	c.mu.Unlock()
}

func (c *scriptConn) release() {
	c.mu.Lock()
	c.released = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.phase2 && !c.released && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	src := &c.hs
	if c.phase2 {
		src = &c.data
	}
	if len(*src) == 0 {
		return 0, io.EOF
	}
	n := copy(p, *src)
	*src = (*src)[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.phase2 {
		select {
		case c.wrote <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	c.cond.Broadcast()
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "client", Net: "unix"} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "server", Net: "unix"} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

func optReply(opt, typ uint32, data []byte) []byte {
	var h [nbdproto.OptReplyHeaderSize]byte
	nbdproto.PutOptReplyHeader(h[:], opt, typ, uint32(len(data)))
	return append(h[:], data...)
}

func greeting(flags uint16) []byte {
	var g [nbdproto.GreetingSize]byte
	nbdproto.PutGreeting(g[:], flags)
	return g[:]
}

func infoExport(size uint64, tflags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, nbdproto.InfoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, tflags)
}

func infoBlockSize(min, pref, max uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, nbdproto.InfoBlockSize)
	b = binary.BigEndian.AppendUint32(b, min)
	b = binary.BigEndian.AppendUint32(b, pref)
	return binary.BigEndian.AppendUint32(b, max)
}

func simpleReply(errno uint32, cookie uint64, data []byte) []byte {
	var h [nbdproto.SimpleReplySize]byte
	nbdproto.PutSimpleReply(h[:], errno, cookie)
	return append(h[:], data...)
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// fuzzOps runs READ, WRITE and FLUSH on c one after the other, each as soon as the previous one
// either returned or put its request on the wire, then releases the server's replies and
// waits for every operation to finish.
func fuzzOps(t *testing.T, c *Client, sc *scriptConn) {
	buf := make([]byte, 512)
	ops := []func() error{
		func() error { _, err := c.ReadAt(buf, 0); return err },
		func() error { _, err := c.WriteAt(make([]byte, 512), 512); return err },
		c.Flush,
	}
	results := make(chan error, len(ops))
	for _, op := range ops {
		done := make(chan struct{})
		go func() {
			results <- op()
			close(done)
		}()
		select {
		case <-done:
		case <-sc.wrote:
		}
	}
	sc.release()
	for range ops {
		err := <-results
		var ne *Error
		if err != nil && errors.As(err, &ne) && ne.Errno == 0 {
			t.Errorf("error reply with errno 0: %v", err)
		}
	}
}

// dialOnce serves hs over a Unix socket to Dial, closing the server's write side after it, and
// runs a READ on the connection if the handshake succeeded. It returns Dial's error.
func dialOnce(t *testing.T, ln net.Listener, hs []byte) error {
	served := make(chan struct{})
	go func() {
		defer close(served)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			conn.Write(hs)
			conn.(*net.UnixConn).CloseWrite()
		}()
		io.Copy(io.Discard, conn)
	}()
	c, err := Dial("unix", ln.Addr().String(), "fuzz")
	if err == nil {
		if c.Size() >= 512 {
			if _, err := c.ReadAt(make([]byte, 512), 0); err == nil {
				t.Errorf("READ succeeded on a connection the server closed")
			}
		}
		c.Close()
	}
	<-served
	return err
}

// FuzzClient plays a hostile NBD server against the client: hs is everything the server sends
// during the handshake (greeting, option replies), replies what it sends once READ, WRITE and
// FLUSH requests (cookies 1, 2, 3) are on the wire. The client must fail cleanly: no panic, no
// hang, no huge allocation.
func FuzzClient(f *testing.F) {
	const fl = nbdproto.TFlagHasFlags | nbdproto.TFlagSendFlush | nbdproto.TFlagSendFUA
	g := greeting(nbdproto.FlagFixedNewstyle | nbdproto.FlagNoZeroes)
	good := cat(g,
		optReply(nbdproto.OptGo, nbdproto.RepInfo, infoExport(1<<20, fl)),
		optReply(nbdproto.OptGo, nbdproto.RepInfo, infoBlockSize(512, 4096, 1<<20)),
		optReply(nbdproto.OptGo, nbdproto.RepAck, nil))
	data := make([]byte, 512)
	for i := range data {
		data[i] = byte(i)
	}
	okReplies := cat(simpleReply(0, 1, data), simpleReply(0, 2, nil), simpleReply(0, 3, nil))
	f.Add(good, okReplies)
	// Replies out of order, errors, a short READ payload.
	f.Add(good, cat(simpleReply(0, 3, nil), simpleReply(nbdproto.ErrIO, 2, nil), simpleReply(0, 1, data)))
	f.Add(good, cat(simpleReply(nbdproto.ErrNoSpc, 2, nil), simpleReply(0, 1, data[:100])))
	f.Add(good, cat(simpleReply(0, 7, nil)))
	f.Add(good, cat(simpleReply(0, 1, data), simpleReply(0, 1, data)))
	var chunk [nbdproto.StructuredHeaderSize]byte
	nbdproto.PutChunkHeader(chunk[:], nbdproto.ReplyFlagDone, nbdproto.ReplyTypeNone, 1, 0)
	f.Add(good, chunk[:])
	// Old server: GO unsupported, EXPORT_NAME answer with and without the 124 zero bytes.
	f.Add(cat(greeting(nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes),
		optReply(nbdproto.OptGo, nbdproto.RepErrUnsup, nil),
		binary.BigEndian.AppendUint64(nil, 1<<20), []byte{0, fl}), okReplies)
	f.Add(cat(greeting(nbdproto.FlagFixedNewstyle),
		optReply(nbdproto.OptGo, nbdproto.RepErrUnsup, nil),
		binary.BigEndian.AppendUint64(nil, 1<<20), []byte{0, fl}, make([]byte, 124)), okReplies)
	// Refusals and malformed handshakes.
	f.Add(cat(g, optReply(nbdproto.OptGo, nbdproto.RepErrUnknown, []byte("no such export\n"))), []byte{})
	f.Add(cat(g, optReply(nbdproto.OptGo, nbdproto.RepAck, nil)), []byte{})
	f.Add(cat(g, optReply(nbdproto.OptGo, nbdproto.RepInfo, []byte{0, 0, 1})), []byte{})
	f.Add(cat(g, optReply(nbdproto.OptList, nbdproto.RepInfo, nil)), []byte{})
	big := optReply(nbdproto.OptGo, nbdproto.RepInfo, nil)
	binary.BigEndian.PutUint32(big[16:], 0xffffffff)
	f.Add(cat(g, big), []byte{})
	// Read-only export of negative size, and a tiny maximum block size.
	f.Add(cat(g, optReply(nbdproto.OptGo, nbdproto.RepInfo, infoExport(1<<63, nbdproto.TFlagReadOnly)),
		optReply(nbdproto.OptGo, nbdproto.RepAck, nil)), okReplies)
	f.Add(cat(g, optReply(nbdproto.OptGo, nbdproto.RepInfo, infoExport(1<<20, fl)),
		optReply(nbdproto.OptGo, nbdproto.RepInfo, infoBlockSize(1, 1, 1)),
		optReply(nbdproto.OptGo, nbdproto.RepAck, nil)), okReplies)
	f.Add(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, nbdproto.NBDMagic), nbdproto.OldstyleMagic), []byte{})
	f.Add([]byte{}, []byte{})

	dir, err := os.MkdirTemp("", "nbdclient-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })

	f.Fuzz(func(t *testing.T, hs, replies []byte) {
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			// Over a real socket, through Dial.
			dialOnce(t, ln, hs)
			// Over the scripted connection, through the transmission phase.
			sc := newScriptConn(hs)
			c := &Client{conn: sc, export: "fuzz", pending: map[uint64]*call{}, done: make(chan struct{})}
			if err := c.handshake(); err != nil {
				sc.Close()
				return
			}
			sc.transmission(replies)
			c.bw = bufio.NewWriterSize(sc, 256<<10)
			go c.readLoop()
			fuzzOps(t, c, sc)
			c.Close()
		}()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("client hung:\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
}

// TestScriptedServer checks the fuzz harness itself: with well-formed replies every operation
// succeeds, so the fuzzer starts from inputs that reach the end of the transmission phase.
func TestScriptedServer(t *testing.T) {
	const fl = nbdproto.TFlagHasFlags | nbdproto.TFlagSendFlush
	hs := cat(greeting(nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes),
		optReply(nbdproto.OptGo, nbdproto.RepInfo, infoExport(1<<20, fl)),
		optReply(nbdproto.OptGo, nbdproto.RepAck, nil))
	data := make([]byte, 512)
	data[7] = 7
	sc := newScriptConn(hs)
	c := &Client{conn: sc, export: "x", pending: map[uint64]*call{}, done: make(chan struct{})}
	if err := c.handshake(); err != nil {
		t.Fatal(err)
	}
	if c.Size() != 1<<20 || c.Flags() != fl {
		t.Fatalf("size %d flags %#x", c.Size(), c.Flags())
	}
	sc.transmission(cat(simpleReply(0, 2, nil), simpleReply(0, 1, data), simpleReply(nbdproto.ErrIO, 3, nil)))
	c.bw = bufio.NewWriterSize(sc, 4096)
	go c.readLoop()
	buf := make([]byte, 512)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, op := range []func() error{
		func() error { _, err := c.ReadAt(buf, 0); return err },
		func() error { _, err := c.WriteAt(make([]byte, 512), 512); return err },
		c.Flush,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = op() }()
		<-sc.wrote
	}
	sc.release()
	wg.Wait()
	var ne *Error
	if errs[0] != nil || errs[1] != nil || !errors.As(errs[2], &ne) || ne.Errno != nbdproto.ErrIO || buf[7] != 7 {
		t.Fatalf("errors %v, data %v", errs, buf[:8])
	}
	c.Close()

	// Through Dial: a complete handshake followed by EOF.
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := dialOnce(t, ln, hs); err != nil {
		t.Fatal(err)
	}
}
