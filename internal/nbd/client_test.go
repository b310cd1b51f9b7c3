package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// newRecording creates a recording with one memory-backed device per size, named after names.
func newRecording(t *testing.T, sectorSize int, names []string, sizes []int64) (*record.Recorder, string, []*Export) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec.pclog")
	h := pclog.Header{Version: pclog.FormatVersion, Source: "nbd"}
	var stores []record.Store
	for i, sz := range sizes {
		h.Devices = append(h.Devices, pclog.Device{ID: uint16(i), Name: names[i], Size: sz, SectorSize: sectorSize})
		stores = append(stores, record.NewMemStore(sz))
	}
	rec, err := record.Create(path, h, stores)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	var exps []*Export
	for i := range sizes {
		exps = append(exps, RecordedExport(names[i], "test export "+names[i], rec.Device(uint16(i))))
	}
	return rec, path, exps
}

// serveTCP serves exps on a loopback port until the test ends; it returns the address and a stop
// function that shuts the server down and waits for it.
func serveTCP(t *testing.T, exps ...*Export) (string, func()) {
	t.Helper()
	srv, err := NewServer(exps...)
	if err != nil {
		t.Fatal(err)
	}
	srv.Logf = t.Logf
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop within 10s")
		}
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// rawClient is a minimal NBD client speaking the wire protocol directly, so tests can send
// requests no well-behaved client library would.
type rawClient struct {
	c          net.Conn
	r          *bufio.Reader
	structured bool
	size       uint64
	tflags     uint16
	blockMin   uint32
	readLen    map[uint64]uint32
}

type rawReply struct {
	cookie uint64
	errno  uint32
	data   []byte
	msg    string
}

func dialRaw(t *testing.T, addr, export string, structured bool) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{c: nc, r: bufio.NewReader(nc), readLen: map[uint64]uint32{}}
	var g [18]byte
	if _, err := io.ReadFull(c.r, g[:]); err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != nbdproto.NBDMagic || binary.BigEndian.Uint64(g[8:]) != nbdproto.IHaveOpt {
		t.Fatalf("bad greeting % x", g)
	}
	if f := binary.BigEndian.Uint16(g[16:]); f != nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes {
		t.Fatalf("handshake flags %#x", f)
	}
	c.write(binary.BigEndian.AppendUint32(nil, nbdproto.ClientFixedNewstyle|nbdproto.ClientNoZeroes))
	if structured {
		c.option(nbdproto.OptStructuredReply, nil)
		if typ, _ := c.optReply(t, nbdproto.OptStructuredReply); typ != nbdproto.RepAck {
			t.Fatalf("STRUCTURED_REPLY answered %#x", typ)
		}
		c.structured = true
	}
	d := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	d = append(d, export...)
	d = binary.BigEndian.AppendUint16(d, 1)
	d = binary.BigEndian.AppendUint16(d, nbdproto.InfoBlockSize)
	c.option(nbdproto.OptGo, d)
	for {
		typ, data := c.optReply(t, nbdproto.OptGo)
		switch typ {
		case nbdproto.RepInfo:
			switch binary.BigEndian.Uint16(data) {
			case nbdproto.InfoExport:
				c.size = binary.BigEndian.Uint64(data[2:])
				c.tflags = binary.BigEndian.Uint16(data[10:])
			case nbdproto.InfoBlockSize:
				c.blockMin = binary.BigEndian.Uint32(data[2:])
			}
			continue
		case nbdproto.RepAck:
			return c
		default:
			t.Fatalf("GO %q answered %#x: %s", export, typ, data[min(len(data), 0):])
		}
	}
}

func (c *rawClient) write(p []byte) {
	_, _ = c.c.Write(p)
}

func (c *rawClient) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, nbdproto.IHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

func (c *rawClient) optReply(t *testing.T, opt uint32) (uint32, []byte) {
	t.Helper()
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		t.Fatalf("read option reply: %v", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != nbdproto.OptReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		t.Fatalf("bad option reply header % x (option %d)", h, opt)
	}
	data := make([]byte, binary.BigEndian.Uint32(h[16:]))
	if _, err := io.ReadFull(c.r, data); err != nil {
		t.Fatalf("read option reply data: %v", err)
	}
	return binary.BigEndian.Uint32(h[12:]), data
}

func (c *rawClient) send(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	if typ == nbdproto.CmdRead {
		c.readLen[cookie] = length
	}
	c.write(reqBytes(typ, flags, cookie, off, length, payload))
}

// recv reads one complete reply (all chunks of a structured reply).
func (c *rawClient) recv() (rawReply, error) {
	var rep rawReply
	for {
		var m [4]byte
		if _, err := io.ReadFull(c.r, m[:]); err != nil {
			return rep, err
		}
		switch binary.BigEndian.Uint32(m[:]) {
		case nbdproto.SimpleReplyMagic:
			var h [12]byte
			if _, err := io.ReadFull(c.r, h[:]); err != nil {
				return rep, err
			}
			rep.errno = binary.BigEndian.Uint32(h[0:])
			rep.cookie = binary.BigEndian.Uint64(h[4:])
			if n, isRead := c.readLen[rep.cookie]; isRead && rep.errno == 0 {
				rep.data = make([]byte, n)
				if _, err := io.ReadFull(c.r, rep.data); err != nil {
					return rep, err
				}
			}
			delete(c.readLen, rep.cookie)
			return rep, nil
		case nbdproto.StructuredReplyMagic:
			var h [16]byte
			if _, err := io.ReadFull(c.r, h[:]); err != nil {
				return rep, err
			}
			flags := binary.BigEndian.Uint16(h[0:])
			typ := binary.BigEndian.Uint16(h[2:])
			rep.cookie = binary.BigEndian.Uint64(h[4:])
			p := make([]byte, binary.BigEndian.Uint32(h[12:]))
			if _, err := io.ReadFull(c.r, p); err != nil {
				return rep, err
			}
			switch typ {
			case nbdproto.ReplyTypeOffsetData:
				rep.data = append(rep.data, p[8:]...)
			case nbdproto.ReplyTypeError:
				rep.errno = binary.BigEndian.Uint32(p)
				rep.msg = string(p[6 : 6+binary.BigEndian.Uint16(p[4:])])
			case nbdproto.ReplyTypeNone:
			default:
				return rep, fmt.Errorf("unexpected chunk type %d", typ)
			}
			if flags&nbdproto.ReplyFlagDone != 0 {
				delete(c.readLen, rep.cookie)
				return rep, nil
			}
		default:
			return rep, errors.New("bad reply magic")
		}
	}
}

// do sends one request and waits for its reply.
func (c *rawClient) do(t *testing.T, typ, flags uint16, off uint64, length uint32, payload []byte) rawReply {
	t.Helper()
	c.send(typ, flags, 77, off, length, payload)
	rep, err := c.recv()
	if err != nil {
		t.Fatalf("%s [%d,+%d): %v", nbdproto.CmdName(typ), off, length, err)
	}
	if rep.cookie != 77 {
		t.Fatalf("reply cookie %d, want 77", rep.cookie)
	}
	return rep
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
