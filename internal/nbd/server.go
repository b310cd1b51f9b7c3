package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/record"
)

// Export is one named device served over NBD. With Device set every modifying request goes
// through Device.Do (recorded, in the global order of its recording) and Store must be
// Device.Store(); with Device nil the export is served unrecorded (benchmarks, tests).
type Export struct {
	Name        string
	Description string
	Size        int64
	// BlockSize is the advertised minimum block size: requests not aligned to it fail with
	// EINVAL (a recording can only hold sector-aligned operations).
	BlockSize int
	Store     record.Store
	Device    *record.Device
	// FastZero says Store.Zero is cheaper than writing zeros, so NBD_CMD_FLAG_FAST_ZERO
	// requests are honoured; otherwise they fail at once with ENOTSUP as the protocol asks.
	FastZero bool
}

// RecordedExport serves dev under name; the sector size of dev is the minimum block size.
func RecordedExport(name, description string, dev *record.Device) *Export {
	_, mem := dev.Store().(*record.MemStore)
	return &Export{Name: name, Description: description, Size: dev.Size(), BlockSize: dev.Info().SectorSize,
		Store: dev.Store(), Device: dev, FastZero: mem}
}

func (e *Export) transmissionFlags() uint16 {
	return nbdproto.TFlagHasFlags | nbdproto.TFlagSendFlush | nbdproto.TFlagSendFUA | nbdproto.TFlagSendTrim | nbdproto.TFlagSendZeroes | nbdproto.TFlagSendFastZero | nbdproto.TFlagSendCache | nbdproto.TFlagCanMultiConn
}

// stopped reports whether the export's recording hit its power-cut trigger.
func (e *Export) stopped() bool { return e.Device != nil && e.Device.Recorder().Stopped() }

// Server serves a fixed set of exports.
type Server struct {
	exports []*Export
	// Logf reports connection-level problems (bad handshakes, failed log writes); nil: silent.
	Logf func(format string, args ...any)

	mu       sync.Mutex
	conns    map[*conn]struct{}
	closing  bool
	wg       sync.WaitGroup
	failures atomic.Int64
}

// NewServer checks the exports and returns a server for them.
func NewServer(exports ...*Export) (*Server, error) {
	if len(exports) == 0 {
		return nil, errors.New("nbd: no export to serve")
	}
	seen := map[string]bool{}
	for _, e := range exports {
		if seen[e.Name] {
			return nil, fmt.Errorf("nbd: export %q listed twice", e.Name)
		}
		seen[e.Name] = true
		bs := int64(e.BlockSize)
		if bs < 1 || bs > 65536 || bs&(bs-1) != 0 {
			return nil, fmt.Errorf("nbd: export %q: block size %d is not a power of two in [1, 65536]", e.Name, bs)
		}
		if e.Size <= 0 || e.Size%bs != 0 {
			return nil, fmt.Errorf("nbd: export %q: size %d is not a positive multiple of the block size %d", e.Name, e.Size, bs)
		}
		if e.Store == nil || e.Store.Size() < e.Size {
			return nil, fmt.Errorf("nbd: export %q: store missing or smaller than %d bytes", e.Name, e.Size)
		}
		if e.Device != nil && (e.Device.Store() != e.Store || int64(e.Device.Info().SectorSize) != bs || e.Device.Size() != e.Size) {
			return nil, fmt.Errorf("nbd: export %q: store, size or block size differ from its recorded device", e.Name)
		}
	}
	return &Server{exports: exports, conns: map[*conn]struct{}{}}, nil
}

// lookup finds an export by name. As with nbdkit, the empty name is the default (first) export,
// and a server with a single export serves it under any name.
func (s *Server) lookup(name string) *Export {
	for _, e := range s.exports {
		if e.Name == name {
			return e
		}
	}
	if name == "" || len(s.exports) == 1 {
		return s.exports[0]
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// Serve accepts connections on l until ctx is done, then stops reading new requests, lets the
// requests in flight finish and be replied to, closes every connection and returns. l is closed.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.shutdown()
	})
	defer stop()
	var err error
	var delay time.Duration
	for {
		c, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			// Running out of descriptors (EMFILE, ENFILE) or a connection aborted before it
			// was accepted must not end the recording: back off and accept again, as
			// net/http does. Only a closed listener ends the loop.
			if !errors.Is(aerr, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("nbd: accept: %v; retrying in %v", aerr, delay)
				select {
				case <-time.After(delay):
					continue
				case <-ctx.Done():
				}
				break
			}
			err = fmt.Errorf("nbd: accept: %w", aerr)
			s.shutdown()
			break
		}
		delay = 0
		if !s.ServeConn(c) {
			break
		}
	}
	l.Close()
	s.wg.Wait()
	return err
}

// ServeConn serves one connection in a new goroutine; false if the server is shutting down (the
// connection is then closed).
func (s *Server) ServeConn(nc net.Conn) bool {
	c := newStreamConn(s, nc, nc)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if err := c.serve(); err != nil && !errors.Is(err, errAbort) {
			s.logf("nbd: connection from %s: %v", nc.RemoteAddr(), err)
		}
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	return true
}

// shutdown stops reading from every connection: each finishes its requests in flight, replies
// and closes.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for c := range s.conns {
		c.stopReading()
	}
}

// ServeStream serves one already-connected stream (for tests and fuzzing: any
// io.ReadWriter). It returns when the client disconnects or the stream ends.
func (s *Server) ServeStream(rw io.ReadWriter) error {
	return newStreamConn(s, rw, nil).serve()
}
