package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

func TestCheckRequest(t *testing.T) {
	const size, bs = 1 << 20, 512
	cases := []struct {
		name   string
		flags  uint16
		typ    uint16
		off    uint64
		length uint32
		want   uint32
	}{
		{"read ok", 0, nbdproto.CmdRead, 0, 4096, 0},
		{"read fua ignored", nbdproto.CmdFlagFUA, nbdproto.CmdRead, 0, 4096, 0},
		{"write fua", nbdproto.CmdFlagFUA, nbdproto.CmdWrite, 512, 512, 0},
		{"write last sector", 0, nbdproto.CmdWrite, size - 512, 512, 0},
		{"write past end", 0, nbdproto.CmdWrite, size - 512, 1024, nbdproto.ErrNoSpc},
		{"write huge offset", 0, nbdproto.CmdWrite, 1 << 63, 512, nbdproto.ErrNoSpc},
		{"write offset wraps", 0, nbdproto.CmdWrite, ^uint64(0) - 100, 512, nbdproto.ErrNoSpc},
		{"zeroes past end", 0, nbdproto.CmdWriteZeroes, size, 512, nbdproto.ErrNoSpc},
		{"read past end", 0, nbdproto.CmdRead, size, 512, nbdproto.ErrInval},
		{"trim past end", 0, nbdproto.CmdTrim, 0, size + 512, nbdproto.ErrInval},
		{"cache past end", 0, nbdproto.CmdCache, size - 512, 1024, nbdproto.ErrInval},
		{"misaligned offset", 0, nbdproto.CmdWrite, 100, 512, nbdproto.ErrInval},
		{"misaligned length", 0, nbdproto.CmdTrim, 0, 100, nbdproto.ErrInval},
		{"zero length", 0, nbdproto.CmdWrite, 0, 0, nbdproto.ErrInval},
		{"read too long", 0, nbdproto.CmdRead, 0, MaxPayload + 512, nbdproto.ErrInval},
		{"trim may be long", 0, nbdproto.CmdTrim, 0, size, 0},
		{"unknown command", 0, 99, 0, 512, nbdproto.ErrInval},
		{"block status not negotiated", 0, 7, 0, 512, nbdproto.ErrInval},
		{"no_hole on write", nbdproto.CmdFlagNoHole, nbdproto.CmdWrite, 0, 512, nbdproto.ErrInval},
		{"no_hole on zeroes", nbdproto.CmdFlagNoHole | nbdproto.CmdFlagFUA, nbdproto.CmdWriteZeroes, 0, 512, 0},
		{"fast zero", nbdproto.CmdFlagFastZero, nbdproto.CmdWriteZeroes, 0, 512, 0},
		{"fast zero on trim", nbdproto.CmdFlagFastZero, nbdproto.CmdTrim, 0, 512, nbdproto.ErrInval},
		{"df not advertised", nbdproto.CmdFlagDF, nbdproto.CmdRead, 0, 512, nbdproto.ErrInval},
		{"unknown flag", 1 << 9, nbdproto.CmdWrite, 0, 512, nbdproto.ErrInval},
		{"flush", 0, nbdproto.CmdFlush, 0, 0, 0},
		{"flush with fua", nbdproto.CmdFlagFUA, nbdproto.CmdFlush, 0, 0, 0},
		{"flush with length", 0, nbdproto.CmdFlush, 0, 512, nbdproto.ErrInval},
	}
	for _, c := range cases {
		got, msg := checkRequest(c.flags, c.typ, c.off, c.length, size, bs)
		if got != c.want {
			t.Errorf("%s: errno %d (%s), want %d", c.name, got, msg, c.want)
		}
		if got != 0 && msg == "" {
			t.Errorf("%s: error without message", c.name)
		}
	}
}

func TestParseInfoRequest(t *testing.T) {
	d := binary.BigEndian.AppendUint32(nil, 3)
	d = append(d, "abc"...)
	d = binary.BigEndian.AppendUint16(d, 2)
	d = binary.BigEndian.AppendUint16(d, nbdproto.InfoName)
	d = binary.BigEndian.AppendUint16(d, nbdproto.InfoBlockSize)
	name, infos, err := parseInfoRequest(d)
	if err != nil || name != "abc" || len(infos) != 2 || infos[1] != nbdproto.InfoBlockSize {
		t.Fatalf("got %q %v %v", name, infos, err)
	}
	for i := range len(d) {
		if _, _, err := parseInfoRequest(d[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
	bad := append([]byte(nil), d...)
	binary.BigEndian.PutUint32(bad, 1<<31)
	if _, _, err := parseInfoRequest(bad); err == nil {
		t.Error("huge name length accepted")
	}
}

// TestHandshakeOptions drives the option phase by hand: unknown options are refused and
// negotiation continues, LIST lists every export, INFO on an unknown export fails politely.
func TestHandshakeOptions(t *testing.T) {
	_, _, exps := newRecording(t, 512, []string{"a", "b"}, []int64{1 << 20, 2 << 20})
	addr, _ := serveTCP(t, exps...)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &rawClient{c: nc, r: newReader(nc)}
	var g [18]byte
	if _, err := io.ReadFull(c.r, g[:]); err != nil {
		t.Fatal(err)
	}
	c.write([]byte{0, 0, 0, 1}) // fixed newstyle, with zeroes
	c.option(42, []byte("junk"))
	if typ, msg := c.optReply(t, 42); typ != nbdproto.RepErrUnsup {
		t.Fatalf("unknown option answered %#x %s", typ, msg)
	}
	c.option(nbdproto.OptStartTLS, nil)
	if typ, _ := c.optReply(t, nbdproto.OptStartTLS); typ != nbdproto.RepErrUnsup {
		t.Fatalf("STARTTLS answered %#x", typ)
	}
	c.option(nbdproto.OptList, []byte("x"))
	if typ, _ := c.optReply(t, nbdproto.OptList); typ != nbdproto.RepErrInvalid {
		t.Fatalf("LIST with data answered %#x", typ)
	}
	c.option(nbdproto.OptList, nil)
	var names []string
	for {
		typ, data := c.optReply(t, nbdproto.OptList)
		if typ == nbdproto.RepAck {
			break
		}
		if typ != nbdproto.RepServer {
			t.Fatalf("LIST reply %#x", typ)
		}
		n := binary.BigEndian.Uint32(data)
		names = append(names, string(data[4:4+n]))
	}
	if strings.Join(names, ",") != "a,b" {
		t.Fatalf("LIST gave %v", names)
	}
	info := func(name string) []byte {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		return binary.BigEndian.AppendUint16(append(d, name...), 0)
	}
	c.option(nbdproto.OptInfo, info("nope"))
	if typ, _ := c.optReply(t, nbdproto.OptInfo); typ != nbdproto.RepErrUnknown {
		t.Fatalf("INFO on unknown export answered %#x", typ)
	}
	c.option(nbdproto.OptInfo, []byte{0, 0, 0, 9, 'x'})
	if typ, _ := c.optReply(t, nbdproto.OptInfo); typ != nbdproto.RepErrInvalid {
		t.Fatalf("malformed INFO answered %#x", typ)
	}
	c.option(nbdproto.OptInfo, info("b"))
	var size uint64
	var gotName string
	for {
		typ, data := c.optReply(t, nbdproto.OptInfo)
		if typ == nbdproto.RepAck {
			break
		}
		switch binary.BigEndian.Uint16(data) {
		case nbdproto.InfoExport:
			size = binary.BigEndian.Uint64(data[2:])
			if f := binary.BigEndian.Uint16(data[10:]); f != nbdproto.TFlagHasFlags|nbdproto.TFlagSendFlush|nbdproto.TFlagSendFUA|nbdproto.TFlagSendTrim|nbdproto.TFlagSendZeroes|nbdproto.TFlagSendFastZero|nbdproto.TFlagSendCache|nbdproto.TFlagCanMultiConn {
				t.Errorf("transmission flags %#x", f)
			}
		case nbdproto.InfoName:
			gotName = string(data[2:])
		}
	}
	if size != 2<<20 || gotName != "b" {
		t.Fatalf("INFO b: size %d name %q", size, gotName)
	}
	// EXPORT_NAME without NO_ZEROES: size, flags and 124 zero bytes.
	c.option(nbdproto.OptExportName, []byte("a"))
	var r [134]byte
	if _, err := io.ReadFull(c.r, r[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(r[:]) != 1<<20 || !bytes.Equal(r[10:], make([]byte, 124)) {
		t.Fatalf("EXPORT_NAME reply % x", r[:12])
	}
	// Transmission works after EXPORT_NAME.
	c.readLen = map[uint64]uint32{}
	if rep := c.do(t, nbdproto.CmdRead, 0, 0, 512, nil); rep.errno != 0 || len(rep.data) != 512 {
		t.Fatalf("read after EXPORT_NAME: %+v", rep)
	}
}

func TestHandshakeAbortAndBadFlags(t *testing.T) {
	_, _, exps := newRecording(t, 512, []string{""}, []int64{1 << 20})
	addr, _ := serveTCP(t, exps...)
	// ABORT is acknowledged, then the server closes.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &rawClient{c: nc, r: newReader(nc)}
	io.ReadFull(c.r, make([]byte, 18))
	c.write([]byte{0, 0, 0, 3})
	c.option(nbdproto.OptAbort, nil)
	if typ, _ := c.optReply(t, nbdproto.OptAbort); typ != nbdproto.RepAck {
		t.Fatalf("ABORT answered %#x", typ)
	}
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after ABORT: %v", err)
	}
	// Unknown client flags: the server drops the connection.
	nc2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	r2 := newReader(nc2)
	io.ReadFull(r2, make([]byte, 18))
	nc2.Write([]byte{0, 0, 0, 0x13})
	if _, err := r2.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after bad client flags: %v", err)
	}
	// The server still serves new clients.
	dialRaw(t, addr, "", true)
}

// TestBadRequests sends requests a client library would refuse to send and checks the errno and
// that the connection keeps serving, in both reply modes.
func TestBadRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			_, path, exps := newRecording(t, 4096, []string{""}, []int64{1 << 20})
			addr, stop := serveTCP(t, exps...)
			c := dialRaw(t, addr, "", structured)
			if c.blockMin != 4096 || c.size != 1<<20 {
				t.Fatalf("block size %d size %d", c.blockMin, c.size)
			}
			data := bytes.Repeat([]byte{0xab}, 4096)
			bad := []struct {
				typ, flags uint16
				off        uint64
				length     uint32
				payload    []byte
				want       uint32
			}{
				{nbdproto.CmdWrite, 0, 1 << 20, 4096, data, nbdproto.ErrNoSpc},
				{nbdproto.CmdWriteZeroes, 0, 1<<20 - 4096, 8192, nil, nbdproto.ErrNoSpc},
				{nbdproto.CmdRead, 0, 1 << 20, 4096, nil, nbdproto.ErrInval},
				{nbdproto.CmdTrim, 0, 1 << 20, 4096, nil, nbdproto.ErrInval},
				{nbdproto.CmdCache, 0, 1<<20 - 4096, 8192, nil, nbdproto.ErrInval},
				{nbdproto.CmdWrite, 0, 512, 4096, data, nbdproto.ErrInval},
				{nbdproto.CmdRead, 0, 0, 512, nil, nbdproto.ErrInval},
				{nbdproto.CmdTrim, 0, 4096, 100, nil, nbdproto.ErrInval},
				{nbdproto.CmdWrite, 1 << 7, 0, 4096, data, nbdproto.ErrInval},
				{nbdproto.CmdRead, nbdproto.CmdFlagDF, 0, 4096, nil, nbdproto.ErrInval},
				{200, 0, 0, 4096, nil, nbdproto.ErrInval},
				{nbdproto.CmdRead, 0, 0, MaxPayload + 4096, nil, nbdproto.ErrInval},
				{nbdproto.CmdWrite, 0, 0, 0, nil, nbdproto.ErrInval},
			}
			for _, b := range bad {
				rep := c.do(t, b.typ, b.flags, b.off, b.length, b.payload)
				if rep.errno != b.want {
					t.Errorf("%s flags %#x [%d,+%d): errno %d, want %d", nbdproto.CmdName(b.typ), b.flags, b.off, b.length, rep.errno, b.want)
				}
				if structured && rep.msg == "" {
					t.Errorf("%s: structured error without message", nbdproto.CmdName(b.typ))
				}
				// Still serving: a good write and read-back.
				if rep := c.do(t, nbdproto.CmdWrite, 0, 8192, 4096, data); rep.errno != 0 {
					t.Fatalf("write after bad request: errno %d", rep.errno)
				}
			}
			if rep := c.do(t, nbdproto.CmdRead, 0, 8192, 4096, nil); rep.errno != 0 || !bytes.Equal(rep.data, data) {
				t.Fatalf("read back: errno %d", rep.errno)
			}
			// An oversized WRITE cannot be skipped: EINVAL, then the server hangs up.
			c.send(nbdproto.CmdWrite, 0, 5, 0, MaxPayload+4096, nil)
			rep, err := c.recv()
			if err != nil || rep.errno != nbdproto.ErrInval || rep.cookie != 5 {
				t.Fatalf("oversized write: %+v %v", rep, err)
			}
			if _, err := c.recv(); err == nil {
				t.Fatal("connection still open after an oversized WRITE")
			}
			// Bad magic: hard disconnect, and the server survives it.
			c2 := dialRaw(t, addr, "", structured)
			c2.write(make([]byte, nbdproto.RequestSize))
			if _, err := c2.recv(); err == nil {
				t.Fatal("reply to a request with a bad magic")
			}
			stop()
			l, err := pclog.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if len(l.Entries) != len(bad) {
				t.Errorf("log holds %d records, want %d (only the good writes)", len(l.Entries), len(bad))
			}
			for _, e := range l.Entries {
				if e.Kind != pclog.KindWrite || e.Offset != 8192 {
					t.Errorf("unexpected record %+v", e)
				}
			}
		})
	}
}

// TestOutOfOrderAndFlushAcrossConnections pipelines many requests (replies may come in any
// order) and checks a FLUSH sent on a second connection is submitted after the writes the first
// connection saw replied.
func TestOutOfOrderAndFlushAcrossConnections(t *testing.T) {
	_, path, exps := newRecording(t, 512, []string{""}, []int64{4 << 20})
	addr, stop := serveTCP(t, exps...)
	a := dialRaw(t, addr, "", true)
	b := dialRaw(t, addr, "", false)
	const n = 200
	for i := range n {
		p := bytes.Repeat([]byte{byte(i)}, 4096)
		a.send(nbdproto.CmdWrite, 0, uint64(i), uint64(i)*4096, 4096, p)
	}
	seen := map[uint64]bool{}
	for range n {
		rep, err := a.recv()
		if err != nil || rep.errno != 0 || seen[rep.cookie] || rep.cookie >= n {
			t.Fatalf("reply %+v %v", rep, err)
		}
		seen[rep.cookie] = true
	}
	if rep := b.do(t, nbdproto.CmdFlush, 0, 0, 0, nil); rep.errno != 0 {
		t.Fatalf("flush errno %d", rep.errno)
	}
	for i := range n {
		a.send(nbdproto.CmdRead, 0, uint64(i), uint64(i)*4096, 4096, nil)
	}
	for range n {
		rep, err := a.recv()
		if err != nil || rep.errno != 0 || !bytes.Equal(rep.data, bytes.Repeat([]byte{byte(rep.cookie)}, 4096)) {
			t.Fatalf("read reply cookie %d: %v", rep.cookie, err)
		}
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != n+1 {
		t.Fatalf("%d records, want %d", len(l.Entries), n+1)
	}
	f := l.Entries[n]
	if f.Kind != pclog.KindFlush {
		t.Fatalf("last record %v", f.Kind)
	}
	for _, e := range l.Entries[:n] {
		if e.Complete >= f.Submit {
			t.Fatalf("write completed at %d, not before the flush's submit %d", e.Complete, f.Submit)
		}
	}
}

// TestFailAfter: after the trigger every request fails with EIO and the log ends at the trigger.
func TestFailAfter(t *testing.T) {
	rec, path, exps := newRecording(t, 512, []string{""}, []int64{1 << 20})
	rec.FailAfter(3)
	addr, stop := serveTCP(t, exps...)
	c := dialRaw(t, addr, "", true)
	p := make([]byte, 512)
	for i := range 3 {
		if rep := c.do(t, nbdproto.CmdWrite, nbdproto.CmdFlagFUA, uint64(i)*512, 512, p); rep.errno != 0 {
			t.Fatalf("write %d before the trigger: errno %d", i, rep.errno)
		}
	}
	for _, r := range []struct {
		typ    uint16
		length uint32
		p      []byte
	}{{nbdproto.CmdWrite, 512, p}, {nbdproto.CmdFlush, 0, nil}, {nbdproto.CmdRead, 512, nil}, {nbdproto.CmdTrim, 512, nil}, {nbdproto.CmdWriteZeroes, 512, nil}} {
		if rep := c.do(t, r.typ, 0, 0, r.length, r.p); rep.errno != nbdproto.ErrIO {
			t.Errorf("%s after the trigger: errno %d, want EIO", nbdproto.CmdName(r.typ), rep.errno)
		}
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != 3 {
		t.Fatalf("log holds %d records, want 3", len(l.Entries))
	}
}

// failingStore fails writes with a chosen error.
type failingStore struct {
	*record.MemStore
	err error
}

func (s failingStore) WriteAt(p []byte, off int64) (int, error) { return 0, s.err }

func TestStoreErrorsMapToErrno(t *testing.T) {
	for _, c := range []struct {
		err  error
		want uint32
	}{{syscall.ENOSPC, nbdproto.ErrNoSpc}, {syscall.EIO, nbdproto.ErrIO}, {errors.New("boom"), nbdproto.ErrIO}} {
		exp := &Export{Size: 1 << 20, BlockSize: 512, Store: failingStore{record.NewMemStore(1 << 20), c.err}}
		addr, _ := serveTCP(t, exp)
		cl := dialRaw(t, addr, "", false)
		if rep := cl.do(t, nbdproto.CmdWrite, 0, 0, 512, make([]byte, 512)); rep.errno != c.want {
			t.Errorf("store error %v: errno %d, want %d", c.err, rep.errno, c.want)
		}
		if rep := cl.do(t, nbdproto.CmdWriteZeroes, nbdproto.CmdFlagFastZero, 0, 512, nil); rep.errno != nbdproto.ErrNotSup {
			t.Errorf("fast zero on a slow store: errno %d, want ENOTSUP", rep.errno)
		}
		if rep := cl.do(t, nbdproto.CmdFlush, 0, 0, 0, nil); rep.errno != 0 {
			t.Errorf("flush: errno %d", rep.errno)
		}
	}
}

func TestSeveralExportsOneRecording(t *testing.T) {
	_, path, exps := newRecording(t, 512, []string{"d0", "d1"}, []int64{1 << 20, 1 << 20})
	addr, stop := serveTCP(t, exps...)
	c0 := dialRaw(t, addr, "d0", false)
	c1 := dialRaw(t, addr, "d1", false)
	c0.do(t, nbdproto.CmdWrite, 0, 0, 512, make([]byte, 512))
	c1.do(t, nbdproto.CmdFlush, 0, 0, 0, nil)
	c1.do(t, nbdproto.CmdTrim, nbdproto.CmdFlagFUA, 512, 1024, nil)
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := []struct {
		dev  uint16
		kind pclog.Kind
		fua  bool
	}{{0, pclog.KindWrite, false}, {1, pclog.KindFlush, false}, {1, pclog.KindDiscard, true}}
	if len(l.Entries) != len(want) {
		t.Fatalf("%d records", len(l.Entries))
	}
	for i, w := range want {
		e := l.Entries[i]
		if e.Device != w.dev || e.Kind != w.kind || e.FUA() != w.fua {
			t.Errorf("record %d: %+v, want %+v", i, e, w)
		}
	}
}
