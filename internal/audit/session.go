package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/powercut/powercut/internal/nbd"
	"github.com/powercut/powercut/internal/nbdclient"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// SessionConfig describes an audit recording.
type SessionConfig struct {
	// Dir holds the sockets (the layer's top socket, the bottom's, the clients' when Listen is
	// empty). It must exist; the session removes what it creates there.
	Dir string
	// Log is the pclog to write: device 0 "top", device 1 "bottom", one global order.
	Log string
	// BottomSize is the bottom export's size; BottomBase (optional) its initial content.
	BottomSize int64
	BottomBase string
	// TopSize is the size the layer must expose.
	TopSize int64
	// SectorSize of both devices (default 512).
	SectorSize int
	// Listen is a TCP address for clients of the top; empty: a Unix socket in Dir.
	Listen string
	Logf   func(format string, args ...any)
}

// Session is a running audit recording: the recorded bottom export the layer writes to, and (once
// Attach found the layer) the recording proxy clients of the top connect to.
type Session struct {
	cfg     SessionConfig
	rec     *record.Recorder
	proxy   *nbd.ProxyStore
	baseF   *os.File
	bottom  *server
	top     *server
	up      *nbdclient.Client
	closeMu sync.Mutex
	closed  bool

	// BottomURI is what the layer connects to (POWERCUT_BOTTOM); TopSocket where it must serve
	// the top (POWERCUT_TOP); ClientURI, after Attach, where clients connect (POWERCUT_NBD).
	BottomURI, TopSocket, ClientURI string
}

type server struct {
	srv    *nbd.Server
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	sock   string
}

func serve(ctx context.Context, srv *nbd.Server, l net.Listener, sock string) *server {
	sctx, cancel := context.WithCancel(ctx)
	s := &server{srv: srv, cancel: cancel, done: make(chan struct{}), sock: sock}
	go func() {
		defer close(s.done)
		s.err = srv.Serve(sctx, l)
	}()
	return s
}

func (s *server) stop() error {
	if s == nil {
		return nil
	}
	s.cancel()
	<-s.done
	if s.sock != "" {
		_ = os.Remove(s.sock)
	}
	return s.err
}

// Start creates the recording and serves the bottom export.
func Start(ctx context.Context, cfg SessionConfig) (_ *Session, err error) {
	if cfg.SectorSize == 0 {
		cfg.SectorSize = 512
	}
	ss := int64(cfg.SectorSize)
	if cfg.BottomSize <= 0 || cfg.BottomSize%ss != 0 || cfg.TopSize <= 0 || cfg.TopSize%ss != 0 {
		return nil, fmt.Errorf("%w: top %d and bottom %d bytes must be positive multiples of the %d-byte sector", ErrConfig, cfg.TopSize, cfg.BottomSize, ss)
	}
	s := &Session{cfg: cfg}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	h := pclog.Header{Version: pclog.FormatVersion, Source: "audit", Note: "powercut audit: device 0 is what clients asked of the layer, device 1 what the layer did to the device below",
		Devices: []pclog.Device{{ID: Top, Name: "top", Size: cfg.TopSize, SectorSize: cfg.SectorSize}, {ID: Bottom, Name: "bottom", Size: cfg.BottomSize, SectorSize: cfg.SectorSize}}}
	bstore := record.NewMemStore(cfg.BottomSize)
	if cfg.BottomBase != "" {
		f, err := os.Open(cfg.BottomBase)
		if err != nil {
			return nil, fmt.Errorf("bottom base: %w", err)
		}
		s.baseF = f
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("bottom base: %w", err)
		}
		if st.Size() > cfg.BottomSize {
			return nil, fmt.Errorf("%w: the bottom base %s has %d bytes, more than the bottom's %d", ErrConfig, cfg.BottomBase, st.Size(), cfg.BottomSize)
		}
		_, sum, err := pclog.HashBase(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return nil, err
		}
		abs, _ := filepath.Abs(cfg.BottomBase)
		h.Bases = []pclog.BaseRef{{Device: Bottom, Size: st.Size(), Hash: sum, Path: abs}}
		bstore = record.NewCOWStore(f, cfg.BottomSize)
	}
	s.proxy = nbd.NewProxyStore(cfg.TopSize)
	if s.rec, err = record.Create(cfg.Log, h, []record.Store{s.proxy, bstore}); err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	bsrv, err := nbd.NewServer(nbd.RecordedExport("bottom", "powercut audit: the device below the layer", s.rec.Device(Bottom)))
	if err != nil {
		return nil, err
	}
	bsrv.Logf = cfg.Logf
	bsock := filepath.Join(cfg.Dir, "bottom.sock")
	l, err := net.Listen("unix", bsock)
	if err != nil {
		return nil, fmt.Errorf("serve the bottom: %w", err)
	}
	s.bottom = serve(ctx, bsrv, l, bsock)
	abs, _ := filepath.Abs(bsock)
	s.BottomURI = "nbd+unix:///bottom?socket=" + abs
	top, _ := filepath.Abs(filepath.Join(cfg.Dir, "top.sock"))
	s.TopSocket = top
	return s, nil
}

// ErrConfig marks a session configuration that cannot work.
var ErrConfig = errors.New("invalid audit configuration")

// ErrLayerNotServing: the layer did not serve the top socket in time (or exited).
var ErrLayerNotServing = errors.New("the layer does not serve the top")

// Attach connects the recording proxy to the layer serving TopSocket, retrying until it answers,
// alive reports an error (the layer exited) or timeout passes, and serves clients.
func (s *Session) Attach(ctx context.Context, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	var up *nbdclient.Client
	for {
		var err error
		if _, serr := os.Stat(s.TopSocket); serr == nil {
			if up, err = nbdclient.Dial("unix", s.TopSocket, ""); err == nil {
				break
			}
		}
		if alive != nil {
			if aerr := alive(); aerr != nil {
				return fmt.Errorf("%w: %w", ErrLayerNotServing, aerr)
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("no socket at %s after %v", s.TopSocket, timeout)
			}
			return fmt.Errorf("%w: %w", ErrLayerNotServing, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := s.proxy.Connect(up); err != nil {
		up.Close()
		return err
	}
	s.up = up
	tsrv, err := nbd.NewServer(nbd.RecordedExport("", "powercut audit: recording proxy in front of the layer", s.rec.Device(Top)))
	if err != nil {
		return err
	}
	tsrv.Logf = s.cfg.Logf
	var l net.Listener
	sock := ""
	if s.cfg.Listen != "" {
		if l, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
		}
		s.ClientURI = "nbd://" + l.Addr().String()
	} else {
		sock = filepath.Join(s.cfg.Dir, "client.sock")
		if l, err = net.Listen("unix", sock); err != nil {
			return fmt.Errorf("serve clients: %w", err)
		}
		abs, _ := filepath.Abs(sock)
		s.ClientURI = "nbd+unix:///?socket=" + abs
	}
	s.top = serve(ctx, tsrv, l, sock)
	return nil
}

// Recorder is the recording (for marks).
func (s *Session) Recorder() *record.Recorder { return s.rec }

// StopClients stops serving clients (requests in flight finish) and disconnects from the layer:
// the layer may then shut down, flushing what it holds to the bottom, which is still recorded.
func (s *Session) StopClients() error {
	err := s.top.stop()
	s.top = nil
	if s.up != nil {
		if cerr := s.up.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
		s.up = nil
	}
	return err
}

// Close stops everything the session runs and closes the log. Safe to call more than once.
func (s *Session) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.StopClients()
	if berr := s.bottom.stop(); berr != nil && err == nil {
		err = berr
	}
	s.bottom = nil
	if s.rec != nil {
		if rerr := s.rec.Close(); rerr != nil && err == nil {
			err = fmt.Errorf("close log: %w", rerr)
		}
	}
	if s.baseF != nil {
		s.baseF.Close()
	}
	_ = os.Remove(s.TopSocket) // the layer's, if it left it behind
	return err
}
