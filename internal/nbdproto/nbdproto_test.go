package nbdproto

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Flags: CmdFlagFUA, Type: CmdWrite, Cookie: 0x0102030405060708, Offset: 1 << 40, Length: 4096}
	var b [RequestSize]byte
	PutRequest(b[:], r)
	want := "25609513" + "0001" + "0001" + "0102030405060708" + "0000010000000000" + "00001000"
	if got := hex.EncodeToString(b[:]); got != want {
		t.Fatalf("encoded %s, want %s", got, want)
	}
	got, err := ParseRequest(b[:])
	if err != nil || got != r {
		t.Fatalf("ParseRequest = %+v, %v; want %+v", got, err, r)
	}
	b[0] ^= 1
	if _, err := ParseRequest(b[:]); err == nil || err.Error() != "bad request magic 0x24609513" {
		t.Fatalf("bad magic: %v", err)
	}
}

func TestOptionHeaders(t *testing.T) {
	b := AppendOption(nil, OptGo, []byte("xy"))
	opt, n, err := ParseOptionHeader(b)
	if err != nil || opt != OptGo || n != 2 || !bytes.Equal(b[OptionHeaderSize:], []byte("xy")) {
		t.Fatalf("option %d len %d err %v (%x)", opt, n, err, b)
	}
	var h [OptReplyHeaderSize]byte
	PutOptReplyHeader(h[:], OptInfo, RepErrUnknown, 9)
	o, typ, l, err := ParseOptReplyHeader(h[:])
	if err != nil || o != OptInfo || typ != RepErrUnknown || l != 9 {
		t.Fatalf("opt reply %d %#x %d %v", o, typ, l, err)
	}
}

func TestReplies(t *testing.T) {
	var b [StructuredHeaderSize]byte
	PutSimpleReply(b[:], ErrNoSpc, 7)
	if e, c := ParseSimpleReply(b[:]); e != ErrNoSpc || c != 7 || be.Uint32(b[:]) != SimpleReplyMagic {
		t.Fatalf("simple reply %d %d", e, c)
	}
	PutChunkHeader(b[:], ReplyFlagDone, ReplyTypeError, 7, 6)
	if hex.EncodeToString(b[:]) != "668e33ef"+"0001"+"8001"+"0000000000000007"+"00000006" {
		t.Fatalf("chunk header %x", b)
	}
	if CmdName(CmdWriteZeroes) != "WRITE_ZEROES" || CmdName(99) != "UNKNOWN" || ErrnoName(ErrIO) != "EIO" || ErrnoName(2) != "" {
		t.Fatal("names")
	}
}
