package nbd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/record"
)

func fuzzServer(t testing.TB) *Server {
	a := &Export{Name: "a", Size: 1 << 20, BlockSize: 512, Store: record.NewMemStore(1 << 20), FastZero: true}
	b := &Export{Name: "b", Description: "second", Size: 64 << 10, BlockSize: 4096, Store: record.NewMemStore(64 << 10)}
	s, err := NewServer(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func optBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdproto.IHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func goData(name string, infos ...uint16) []byte {
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, uint16(len(infos)))
	for _, i := range infos {
		d = binary.BigEndian.AppendUint16(d, i)
	}
	return d
}

func reqBytes(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, nbdproto.RequestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// checkOptionReplies parses the server's side of a handshake: the greeting, then well-formed
// option replies, possibly ending with an EXPORT_NAME reply.
func checkOptionReplies(t *testing.T, out []byte) {
	if len(out) < 18 {
		t.Fatalf("greeting of %d bytes", len(out))
	}
	if binary.BigEndian.Uint64(out) != nbdproto.NBDMagic || binary.BigEndian.Uint64(out[8:]) != nbdproto.IHaveOpt {
		t.Fatalf("bad greeting")
	}
	out = out[18:]
	for len(out) > 0 {
		if len(out) < 20 || binary.BigEndian.Uint64(out) != nbdproto.OptReplyMagic {
			// The only other thing the server may send is an EXPORT_NAME answer (10 or 134
			// bytes) that ends the handshake.
			if len(out) != 10 && len(out) != 134 {
				t.Fatalf("trailing %d bytes after option replies", len(out))
			}
			return
		}
		n := binary.BigEndian.Uint32(out[16:])
		if uint64(len(out)) < 20+uint64(n) {
			t.Fatalf("option reply of %d bytes truncated", n)
		}
		out = out[20+n:]
	}
}

func FuzzHandshake(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	seeds := [][]byte{
		flags,
		append(append([]byte{}, flags...), optBytes(nbdproto.OptGo, goData("a", nbdproto.InfoBlockSize, nbdproto.InfoName, nbdproto.InfoDescription))...),
		append(append([]byte{}, flags...), optBytes(nbdproto.OptInfo, goData("b"))...),
		append(append(append([]byte{}, flags...), optBytes(nbdproto.OptList, nil)...), optBytes(nbdproto.OptExportName, []byte("b"))...),
		append(append(append([]byte{}, flags...), optBytes(nbdproto.OptStructuredReply, nil)...), optBytes(nbdproto.OptAbort, nil)...),
		append(append([]byte{}, flags...), optBytes(99, []byte("x"))...),
		append(append([]byte{}, flags...), optBytes(nbdproto.OptInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})...),
		append([]byte{0, 0, 0, 1}, optBytes(nbdproto.OptExportName, []byte("zz"))...),
		append(append([]byte{}, flags...), 0x49, 0x48, 0x41, 0x56, 0x45, 0x4F, 0x50, 0x54, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := fuzzServer(t)
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		sess, err := s.handshake(bufio.NewReader(bytes.NewReader(in)), w)
		w.Flush()
		if err == nil && (sess == nil || sess.export == nil) {
			t.Fatalf("handshake succeeded without an export")
		}
		if err != nil && sess != nil {
			t.Fatalf("handshake failed (%v) but returned a session", err)
		}
		checkOptionReplies(t, out.Bytes())
	})
}

// expectReplies is the reference reading of a request stream: how many requests the server
// must answer before the stream ends, is cut, or must be dropped.
func expectReplies(in []byte) int {
	n := 0
	for len(in) >= nbdproto.RequestSize {
		if binary.BigEndian.Uint32(in) != nbdproto.RequestMagic {
			return n
		}
		typ := binary.BigEndian.Uint16(in[6:])
		length := binary.BigEndian.Uint32(in[24:])
		in = in[nbdproto.RequestSize:]
		switch {
		case typ == nbdproto.CmdDisc:
			return n
		case typ == nbdproto.CmdWrite && length > MaxPayload:
			return n + 1
		case typ == nbdproto.CmdWrite:
			if uint64(len(in)) < uint64(length) {
				return n
			}
			in = in[length:]
		}
		n++
	}
	return n
}

func FuzzRequest(f *testing.F) {
	p := bytes.Repeat([]byte{7}, 512)
	seeds := [][]byte{
		reqBytes(nbdproto.CmdWrite, nbdproto.CmdFlagFUA, 1, 0, 512, p),
		append(reqBytes(nbdproto.CmdWrite, 0, 1, 512, 512, p), reqBytes(nbdproto.CmdRead, 0, 2, 512, 512, nil)...),
		append(reqBytes(nbdproto.CmdFlush, 0, 3, 0, 0, nil), reqBytes(nbdproto.CmdTrim, 0, 4, 0, 4096, nil)...),
		reqBytes(nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole|nbdproto.CmdFlagFastZero, 5, 0, 8192, nil),
		reqBytes(nbdproto.CmdCache, 0, 6, 0, 4096, nil),
		reqBytes(nbdproto.CmdRead, 0, 7, 1<<20, 512, nil),
		reqBytes(nbdproto.CmdWrite, 0, 8, 3, 512, p),
		reqBytes(nbdproto.CmdWrite, 0, 9, 0, MaxPayload+1, nil),
		reqBytes(77, 0xffff, 10, 0, 512, nil),
		append(reqBytes(nbdproto.CmdRead, 0, 11, 0, 512, nil), reqBytes(nbdproto.CmdDisc, 0, 12, 0, 0, nil)...),
		append(reqBytes(nbdproto.CmdWrite, 0, 13, 0, 1024, p), 0xde, 0xad),
	}
	for _, s := range seeds {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in []byte, structured bool) {
		s := fuzzServer(t)
		prefix := []byte{0, 0, 0, 3}
		if structured {
			prefix = append(prefix, optBytes(nbdproto.OptStructuredReply, nil)...)
		}
		prefix = append(prefix, optBytes(nbdproto.OptGo, goData("a"))...)
		var out bytes.Buffer
		err := s.ServeStream(struct {
			io.Reader
			io.Writer
		}{io.MultiReader(bytes.NewReader(prefix), bytes.NewReader(in)), &out})
		_ = err // a malformed stream may end in an error; it must never crash
		o := out.Bytes()
		// Skip the greeting and the option replies up to GO's ACK.
		o = o[18:]
		for {
			if len(o) < 20 {
				t.Fatalf("handshake replies truncated")
			}
			opt := binary.BigEndian.Uint32(o[8:])
			typ := binary.BigEndian.Uint32(o[12:])
			n := binary.BigEndian.Uint32(o[16:])
			o = o[20+n:]
			if opt == nbdproto.OptGo && typ == nbdproto.RepAck {
				break
			}
		}
		if !structured {
			// Simple READ replies carry data whose length only the request says; the
			// structured case below checks framing, this one only the crash-freedom.
			return
		}
		replies := 0
		for len(o) > 0 {
			if len(o) < 4 {
				t.Fatalf("truncated reply: % x", o)
			}
			switch binary.BigEndian.Uint32(o) {
			case nbdproto.SimpleReplyMagic:
				if len(o) < nbdproto.SimpleReplySize {
					t.Fatalf("truncated simple reply: % x", o)
				}
				o = o[nbdproto.SimpleReplySize:]
				replies++
			case nbdproto.StructuredReplyMagic:
				if len(o) < nbdproto.StructuredHeaderSize {
					t.Fatalf("truncated chunk header: % x", o)
				}
				n := binary.BigEndian.Uint32(o[16:])
				if binary.BigEndian.Uint16(o[4:])&nbdproto.ReplyFlagDone != 0 {
					replies++
				}
				if uint64(len(o)) < nbdproto.StructuredHeaderSize+uint64(n) {
					t.Fatalf("chunk of %d bytes truncated", n)
				}
				o = o[nbdproto.StructuredHeaderSize+n:]
			default:
				t.Fatalf("bad reply magic % x", o[:4])
			}
		}
		if want := expectReplies(in); replies != want {
			t.Fatalf("%d replies, want %d", replies, want)
		}
	})
}
