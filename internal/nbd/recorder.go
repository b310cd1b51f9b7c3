package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/powercut/powercut/internal/control"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// ErrConfig marks a recorder configuration that cannot work (conflicting or missing settings):
// the caller's mistake, not a failure of the machine.
var ErrConfig = errors.New("invalid NBD recorder configuration")

func configErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

// ExportSpec names one disk of a recorder; Size 0 takes the base's or backing file's size.
type ExportSpec struct {
	Name string
	Size int64
}

// RecorderConfig describes a recording NBD server: the frontend that lets any NBD client (qemu,
// libnbd programs, nbdfuse + loop) drive a recorded disk.
type RecorderConfig struct {
	// Listen is a TCP address; Unix, when set, a Unix socket path to listen on instead.
	Listen, Unix string
	// Exports are the disks, devices 0..n-1 of the recording (default: one export named "").
	Exports []ExportSpec
	// Base serves a copy-on-write view of an image (never modified); Backing writes through to
	// a file (created with the export's size when missing). Single export only.
	Base, Backing string
	// Log is the pclog to write; empty with NoRecord serves without recording.
	Log      string
	NoRecord bool
	// BlockSize is the logical sector size: 512 or 4096 (the advertised minimum block size and
	// the devices' sector size in the log header).
	BlockSize int
	// FailAfter cuts the power after this many recorded operations; FailAfterMark at this mark.
	FailAfter     uint64
	FailAfterMark string
	// Control, when set, is a control socket for `powercut mark`.
	Control string
	// Logf receives the server's messages (nil: silent).
	Logf func(format string, args ...any)
}

// Recorder is a running recording NBD server. Start returns once it accepts connections.
type Recorder struct {
	cfg     RecorderConfig
	rec     *record.Recorder
	srv     *Server
	ln      net.Listener
	uri     string
	closers []io.Closer
	cancel  context.CancelFunc
	served  chan struct{}
	serr    error
	stopCtl func() error
}

// StartRecorder validates cfg, creates the recording and starts serving in the background.
func StartRecorder(ctx context.Context, cfg RecorderConfig) (_ *Recorder, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &Recorder{cfg: cfg, served: make(chan struct{})}
	defer func() {
		if err != nil {
			r.closeAll()
		}
	}()
	stores, bases, specs, err := r.openStores()
	if err != nil {
		return nil, err
	}
	exps, err := r.exports(stores, bases, specs)
	if err != nil {
		return nil, err
	}
	if r.srv, err = NewServer(exps...); err != nil {
		return nil, err
	}
	r.srv.Logf = cfg.Logf
	if r.ln, r.uri, err = listen(cfg); err != nil {
		return nil, err
	}
	if cfg.Control != "" {
		var m control.Marker = noRecordMarker{}
		if r.rec != nil {
			m = r.rec
		}
		if r.stopCtl, err = control.Start(ctx, cfg.Control, m); err != nil {
			r.ln.Close()
			return nil, err
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go func() {
		defer close(r.served)
		r.serr = r.srv.Serve(sctx, r.ln)
	}()
	return r, nil
}

func (c *RecorderConfig) check() error {
	if c.Unix != "" && c.Listen != "" {
		return configErr("a TCP address and a Unix socket are exclusive")
	}
	if c.BlockSize == 0 {
		c.BlockSize = 512
	}
	if c.BlockSize != 512 && c.BlockSize != 4096 {
		return configErr("block size %d: want 512 or 4096", c.BlockSize)
	}
	if c.Base != "" && c.Backing != "" {
		return configErr("a copy-on-write base and a backing file are exclusive")
	}
	if c.NoRecord && (c.Log != "" || c.FailAfter > 0 || c.FailAfterMark != "") {
		return configErr("serving without recording takes neither a log nor a power-cut trigger")
	}
	if !c.NoRecord && c.Log == "" {
		return configErr("no log to record to")
	}
	if len(c.Exports) == 0 {
		c.Exports = []ExportSpec{{}}
	}
	seen := map[string]bool{}
	for _, e := range c.Exports {
		if seen[e.Name] {
			return configErr("export %q given twice", e.Name)
		}
		seen[e.Name] = true
	}
	if (c.Base != "" || c.Backing != "") && len(c.Exports) > 1 {
		return configErr("a base or backing file applies to a single export")
	}
	return nil
}

// openStores opens what each export reads and writes, and the base references of the log.
func (r *Recorder) openStores() ([]record.Store, []pclog.BaseRef, []ExportSpec, error) {
	cfg := r.cfg
	specs := append([]ExportSpec(nil), cfg.Exports...)
	switch {
	case cfg.Base != "":
		f, err := os.Open(cfg.Base)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("base image: %w", err)
		}
		r.closers = append(r.closers, f)
		st, err := f.Stat()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("base image: %w", err)
		}
		if specs[0].Size == 0 {
			specs[0].Size = st.Size()
		} else if specs[0].Size != st.Size() {
			return nil, nil, nil, configErr("size %d differs from the %d bytes of the base image %s", specs[0].Size, st.Size(), cfg.Base)
		}
		r.logf("hashing base %s (%d bytes)", cfg.Base, st.Size())
		_, sum, err := pclog.HashBase(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("hash base image %s: %w", cfg.Base, err)
		}
		abs, _ := filepath.Abs(cfg.Base)
		return []record.Store{record.NewCOWStore(f, st.Size())}, []pclog.BaseRef{{Device: 0, Size: st.Size(), Hash: sum, Path: abs}}, specs, nil
	case cfg.Backing != "":
		ref, size, err := prepareBacking(cfg.Backing, specs[0].Size)
		if err != nil {
			return nil, nil, nil, err
		}
		specs[0].Size = size
		fs, err := record.OpenFileStore(cfg.Backing, size)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("backing file: %w", err)
		}
		r.closers = append(r.closers, fs)
		var bases []pclog.BaseRef
		if ref != nil {
			bases = append(bases, *ref)
		}
		return []record.Store{fs}, bases, specs, nil
	}
	var stores []record.Store
	for _, sp := range specs {
		if sp.Size == 0 {
			return nil, nil, nil, configErr("export %q has no size", sp.Name)
		}
		stores = append(stores, record.NewMemStore(sp.Size))
	}
	return stores, nil, specs, nil
}

// prepareBacking creates a missing backing file of size bytes, or checks an existing one and
// returns its content hash as the recording's base (it is changed in place, so the hash lets a
// later exploration refuse a base that is not this one).
func prepareBacking(path string, size int64) (*pclog.BaseRef, int64, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if size == 0 {
			return nil, 0, configErr("a size is needed to create the backing file %s", path)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, 0, fmt.Errorf("backing file: %w", err)
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("backing file: %w", err)
		}
		return nil, size, nil
	case err != nil:
		return nil, 0, fmt.Errorf("backing file: %w", err)
	}
	if size == 0 {
		size = st.Size()
	} else if size != st.Size() {
		return nil, 0, configErr("size %d differs from the %d bytes of the backing file %s", size, st.Size(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("backing file: %w", err)
	}
	_, sum, err := pclog.HashBase(f)
	f.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("hash backing file %s: %w", path, err)
	}
	return &pclog.BaseRef{Device: 0, Size: st.Size(), Hash: sum}, size, nil
}

// exports creates the recording (unless NoRecord) and the exports over the stores.
func (r *Recorder) exports(stores []record.Store, bases []pclog.BaseRef, specs []ExportSpec) ([]*Export, error) {
	cfg := r.cfg
	for _, sp := range specs {
		if sp.Size%int64(cfg.BlockSize) != 0 {
			return nil, configErr("export %q: size %d is not a multiple of the %d-byte block size", sp.Name, sp.Size, cfg.BlockSize)
		}
	}
	var exps []*Export
	if cfg.NoRecord {
		for i, sp := range specs {
			_, mem := stores[i].(*record.MemStore)
			exps = append(exps, &Export{Name: sp.Name, Description: "powercut (not recording)", Size: sp.Size,
				BlockSize: cfg.BlockSize, Store: stores[i], FastZero: mem})
		}
		return exps, nil
	}
	h := pclog.Header{Version: pclog.FormatVersion, Source: "nbd", Bases: bases}
	for i, sp := range specs {
		h.Devices = append(h.Devices, pclog.Device{ID: uint16(i), Name: sp.Name, Size: sp.Size, SectorSize: cfg.BlockSize})
	}
	rec, err := record.Create(cfg.Log, h, stores)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	r.rec = rec
	r.closers = append([]io.Closer{closerFunc(rec.Close)}, r.closers...)
	if cfg.FailAfter > 0 {
		rec.FailAfter(cfg.FailAfter)
	}
	if cfg.FailAfterMark != "" {
		rec.FailAfterMark(cfg.FailAfterMark)
	}
	for i, sp := range specs {
		exps = append(exps, RecordedExport(sp.Name, fmt.Sprintf("powercut recording %s (device %d)", cfg.Log, i), rec.Device(uint16(i))))
	}
	return exps, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// listen opens the listener and returns the NBD URI clients use.
func listen(cfg RecorderConfig) (net.Listener, string, error) {
	if cfg.Unix != "" {
		if fi, err := os.Lstat(cfg.Unix); err == nil {
			if fi.Mode().Type() != os.ModeSocket {
				return nil, "", configErr("socket path %s exists and is not a socket", cfg.Unix)
			}
			if c, err := net.DialTimeout("unix", cfg.Unix, 200*time.Millisecond); err == nil {
				c.Close()
				return nil, "", configErr("another server is listening on %s", cfg.Unix)
			}
			if err := os.Remove(cfg.Unix); err != nil {
				return nil, "", fmt.Errorf("socket %s: removing stale socket: %w", cfg.Unix, err)
			}
		}
		l, err := net.Listen("unix", cfg.Unix)
		if err != nil {
			return nil, "", fmt.Errorf("listen on %s: %w", cfg.Unix, err)
		}
		abs, _ := filepath.Abs(cfg.Unix)
		return l, "nbd+unix:///?socket=" + abs, nil
	}
	addr := cfg.Listen
	if addr == "" {
		addr = "127.0.0.1:10809"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, "nbd://" + l.Addr().String(), nil
}

// noRecordMarker answers marks when nothing is recorded.
type noRecordMarker struct{}

func (noRecordMarker) Mark(string) error { return errors.New("not recording") }

func (r *Recorder) logf(format string, a ...any) {
	if r.cfg.Logf != nil {
		r.cfg.Logf(format, a...)
	}
}

// URI is the NBD URI clients connect to.
func (r *Recorder) URI() string { return r.uri }

// Addr is the listener's address.
func (r *Recorder) Addr() net.Addr { return r.ln.Addr() }

// Mark records a mark in the global order.
func (r *Recorder) Mark(name string) error {
	if r.rec == nil {
		return noRecordMarker{}.Mark(name)
	}
	return r.rec.Mark(name)
}

// Recording is the in-process recorder behind the exports (nil when not recording).
func (r *Recorder) Recording() *record.Recorder { return r.rec }

// Records is the number of records written so far.
func (r *Recorder) Records() uint64 {
	if r.rec == nil {
		return 0
	}
	return r.rec.Records()
}

// PowerCut reports whether the power-cut trigger fired.
func (r *Recorder) PowerCut() bool { return r.rec != nil && r.rec.Stopped() }

// Done is closed when the server stopped serving.
func (r *Recorder) Done() <-chan struct{} { return r.served }

// Close stops accepting, finishes the requests in flight, stops the control socket and closes
// the log. It is safe to call more than once.
func (r *Recorder) Close() error {
	if r.cancel != nil {
		r.cancel()
		<-r.served
		r.cancel = nil
	}
	err := r.serr
	if r.stopCtl != nil {
		if cerr := r.stopCtl(); cerr != nil && err == nil {
			err = cerr
		}
		r.stopCtl = nil
	}
	if cerr := r.closeAll(); cerr != nil && err == nil {
		err = fmt.Errorf("close log: %w", cerr)
	}
	return err
}

func (r *Recorder) closeAll() error {
	var first error
	for _, c := range r.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	r.closers = nil
	return first
}
