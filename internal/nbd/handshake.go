package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/powercut/powercut/internal/nbdproto"
)

// maxOptionLen bounds the data of one option we read into memory. Export names are at most 4096
// bytes, so no valid option we understand comes near it; a longer option is skipped and answered
// NBD_REP_ERR_TOO_BIG.
const maxOptionLen = 64 << 10

// errAbort ends a handshake the client aborted (NBD_OPT_ABORT): not an error worth reporting.
var errAbort = errors.New("nbd: client aborted the handshake")

// session is the outcome of a successful handshake.
type session struct {
	export     *Export
	structured bool
}

// handshake runs the fixed newstyle negotiation on r/w and returns the export the client chose.
// It never trusts a length from the wire for an allocation beyond maxOptionLen.
func (s *Server) handshake(r *bufio.Reader, w *bufio.Writer) (*session, error) {
	var b [nbdproto.GreetingSize]byte
	nbdproto.PutGreeting(b[:], nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	if _, err := w.Write(b[:]); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("send greeting: %w", err)
	}
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return nil, fmt.Errorf("read client flags: %w", err)
	}
	cflags := be.Uint32(b[:4])
	if cflags&^(nbdproto.ClientFixedNewstyle|nbdproto.ClientNoZeroes) != 0 {
		// The protocol says to drop the connection on an unknown client flag.
		return nil, fmt.Errorf("client sent unknown handshake flags %#x", cflags)
	}
	noZeroes := cflags&nbdproto.ClientNoZeroes != 0
	sess := &session{}
	var hdr [nbdproto.OptionHeaderSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("read option: %w", err)
		}
		opt, n, err := nbdproto.ParseOptionHeader(hdr[:])
		if err != nil {
			return nil, err
		}
		if n > maxOptionLen {
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return nil, fmt.Errorf("skip %d-byte option %d: %w", n, opt, err)
			}
			if opt == nbdproto.OptExportName {
				return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME with a %d-byte name", n)
			}
			if err := optReply(w, opt, nbdproto.RepErrTooBig, []byte("option data too long")); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, fmt.Errorf("read option %d data: %w", opt, err)
		}
		done, err := s.option(w, sess, opt, data, noZeroes)
		if err != nil {
			return nil, err
		}
		if err := w.Flush(); err != nil {
			return nil, fmt.Errorf("send option reply: %w", err)
		}
		if done {
			return sess, nil
		}
	}
}

// option answers one option; done means the transmission phase starts.
func (s *Server) option(w *bufio.Writer, sess *session, opt uint32, data []byte, noZeroes bool) (done bool, err error) {
	switch opt {
	case nbdproto.OptExportName:
		e := s.lookup(string(data))
		if e == nil {
			// EXPORT_NAME cannot fail politely: the protocol says to close.
			return false, fmt.Errorf("client asked for unknown export %q", data)
		}
		var b [10 + 124]byte
		be.PutUint64(b[0:], uint64(e.Size))
		be.PutUint16(b[8:], e.transmissionFlags())
		n := 10
		if !noZeroes {
			n += 124
		}
		if _, err := w.Write(b[:n]); err != nil {
			return false, err
		}
		sess.export = e
		return true, nil
	case nbdproto.OptAbort:
		_ = optReply(w, opt, nbdproto.RepAck, nil)
		_ = w.Flush()
		return false, errAbort
	case nbdproto.OptList:
		if len(data) != 0 {
			return false, optReply(w, opt, nbdproto.RepErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, e := range s.exports {
			p := make([]byte, 4, 4+len(e.Name)+len(e.Description))
			be.PutUint32(p, uint32(len(e.Name)))
			p = append(p, e.Name...)
			p = append(p, e.Description...)
			if err := optReply(w, opt, nbdproto.RepServer, p); err != nil {
				return false, err
			}
		}
		return false, optReply(w, opt, nbdproto.RepAck, nil)
	case nbdproto.OptInfo, nbdproto.OptGo:
		name, _, perr := parseInfoRequest(data)
		if perr != nil {
			return false, optReply(w, opt, nbdproto.RepErrInvalid, []byte(perr.Error()))
		}
		e := s.lookup(name)
		if e == nil {
			return false, optReply(w, opt, nbdproto.RepErrUnknown, fmt.Appendf(nil, "no export named %q", name))
		}
		// Every reply carries the export, name, description and block sizes whether asked or
		// not: the protocol allows unrequested information, and clients that do not ask for
		// block sizes still learn our alignment.
		var p [18]byte
		be.PutUint16(p[0:], nbdproto.InfoExport)
		be.PutUint64(p[2:], uint64(e.Size))
		be.PutUint16(p[10:], e.transmissionFlags())
		if err := optReply(w, opt, nbdproto.RepInfo, p[:12]); err != nil {
			return false, err
		}
		if err := optReply(w, opt, nbdproto.RepInfo, append([]byte{0, nbdproto.InfoName}, e.Name...)); err != nil {
			return false, err
		}
		if e.Description != "" {
			if err := optReply(w, opt, nbdproto.RepInfo, append([]byte{0, nbdproto.InfoDescription}, e.Description...)); err != nil {
				return false, err
			}
		}
		be.PutUint16(p[0:], nbdproto.InfoBlockSize)
		be.PutUint32(p[2:], uint32(e.BlockSize))
		be.PutUint32(p[6:], uint32(max(e.BlockSize, 4096)))
		be.PutUint32(p[10:], MaxPayload)
		if err := optReply(w, opt, nbdproto.RepInfo, p[:14]); err != nil {
			return false, err
		}
		if err := optReply(w, opt, nbdproto.RepAck, nil); err != nil {
			return false, err
		}
		if opt == nbdproto.OptGo {
			sess.export = e
			return true, nil
		}
		return false, nil
	case nbdproto.OptStructuredReply:
		if len(data) != 0 {
			return false, optReply(w, opt, nbdproto.RepErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		sess.structured = true
		return false, optReply(w, opt, nbdproto.RepAck, nil)
	}
	// Unknown options (STARTTLS, meta contexts, extended headers, ...) are refused and
	// negotiation goes on: the client falls back.
	return false, optReply(w, opt, nbdproto.RepErrUnsup, fmt.Appendf(nil, "option %d not supported by powercut", opt))
}

// parseInfoRequest decodes NBD_OPT_INFO/GO data: u32 name length, name, u16 count, count × u16.
func parseInfoRequest(data []byte) (name string, infos []uint16, err error) {
	if len(data) < 6 {
		return "", nil, fmt.Errorf("info request of %d bytes is too short", len(data))
	}
	nl := uint64(be.Uint32(data))
	if nl > 4096 || 4+nl+2 > uint64(len(data)) {
		return "", nil, fmt.Errorf("export name length %d does not fit the %d-byte request", nl, len(data))
	}
	name = string(data[4 : 4+nl])
	rest := data[4+nl:]
	cnt := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*cnt {
		return "", nil, fmt.Errorf("info request lists %d items in %d bytes", cnt, len(rest))
	}
	for i := range cnt {
		infos = append(infos, be.Uint16(rest[2*i:]))
	}
	return name, infos, nil
}

// optReply writes one option reply.
func optReply(w *bufio.Writer, opt, typ uint32, data []byte) error {
	var b [nbdproto.OptReplyHeaderSize]byte
	nbdproto.PutOptReplyHeader(b[:], opt, typ, uint32(len(data)))
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("send option reply: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("send option reply: %w", err)
	}
	return nil
}
