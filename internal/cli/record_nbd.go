package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/control"
	"github.com/powercut/powercut/internal/nbd"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

func init() {
	registerRecord("nbd", newRecordNBD)
}

type recordNBDOpts struct {
	listen, unix, size, log, base, backing, control, failAfter, readyFile string
	exports                                                               []string
	blockSize                                                             int
	noRecord                                                              bool
	listenSet                                                             bool
}

func newRecordNBD(env *Env) *cobra.Command {
	var o recordNBDOpts
	c := &cobra.Command{
		Use:   "nbd [--listen ADDR | --unix SOCK] --size N --log F.pclog [--base IMG | --backing FILE] [--export NAME[:SIZE]]...",
		Short: "Serve disks over NBD and record every request into a .pclog",
		Long: `Serve one or more disks over the NBD protocol and record every WRITE, WRITE_ZEROES, TRIM and
FLUSH with its exact submit/completion order. Any NBD client can write through it: qemu
(-drive file=nbd://...), libnbd programs (nbdcopy, nbdsh, fio --ioengine=nbd), nbdfuse + losetup
for a kernel file system.

The log record of a FLUSH or FUA request is on stable storage before the client sees the reply,
so killing the recorder loses no acknowledged flush. A request whose log record cannot be written
(log disk full, I/O error) fails with an NBD error; nothing is dropped silently.

Disks live in memory by default. --base IMG serves a copy-on-write view of IMG (never modified,
recorded as the log's base by size and xxh3-128 hash); --backing FILE writes through to FILE.
Several --export NAME[:SIZE] serve several disks, recorded as devices 0..n-1 of one log.

--fail-after N|mark:NAME simulates a power cut: after N recorded operations (or the mark NAME)
every request fails with EIO and the log ends there.

Runs until SIGINT or SIGTERM, then finishes the requests in flight and closes the log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.listenSet = cmd.Flags().Changed("listen")
			return runRecordNBD(env, &o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:10809", "TCP address to listen on (loopback by default; port 0 picks a free port)")
	f.StringVar(&o.unix, "unix", "", "listen on this Unix socket instead of TCP")
	f.StringVar(&o.size, "size", "", "disk size in bytes or with a K/M/G/T suffix (default: the size of --base/--backing)")
	f.StringVar(&o.log, "log", "", "pclog file to write")
	f.StringVar(&o.base, "base", "", "serve a copy-on-write view of this image (never modified)")
	f.StringVar(&o.backing, "backing", "", "write through to this file (created with --size if missing)")
	f.StringArrayVar(&o.exports, "export", nil, "export NAME[:SIZE]; repeat for several disks (default: one export named \"\")")
	f.StringVar(&o.control, "control", "", "control socket for 'powercut mark' (mode 0600; see POWERCUT_CONTROL)")
	f.IntVar(&o.blockSize, "block-size", 512, "logical sector size: 512 or 4096 (the minimum block size advertised)")
	f.StringVar(&o.failAfter, "fail-after", "", "simulate a power cut after OP_COUNT operations or at mark:NAME")
	f.BoolVar(&o.noRecord, "no-record", false, "serve without recording (to measure the recorder's overhead)")
	f.StringVar(&o.readyFile, "ready-file", "", "write the server's NBD URI to this file once it accepts connections")
	return c
}

type nbdExportSpec struct {
	name string
	size int64
}

func runRecordNBD(env *Env, o *recordNBDOpts) error {
	if o.unix != "" && o.listenSet {
		return usagef("--listen and --unix are mutually exclusive")
	}
	if o.blockSize != 512 && o.blockSize != 4096 {
		return usagef("--block-size %d: want 512 or 4096", o.blockSize)
	}
	if o.base != "" && o.backing != "" {
		return usagef("--base and --backing are mutually exclusive")
	}
	if o.noRecord {
		if o.log != "" || o.failAfter != "" {
			return usagef("--no-record takes neither --log nor --fail-after")
		}
	} else if o.log == "" {
		return usagef("--log is required (or --no-record)")
	}
	var size int64
	if o.size != "" {
		v, err := parsePositiveSize(o.size)
		if err != nil {
			return usagef("--size: %v", err)
		}
		size = v
	}
	specs := []nbdExportSpec{{name: "", size: size}}
	if len(o.exports) > 0 {
		specs = specs[:0]
		for _, s := range o.exports {
			sp := nbdExportSpec{name: s, size: size}
			if i := strings.LastIndexByte(s, ':'); i >= 0 {
				v, err := parsePositiveSize(s[i+1:])
				if err != nil {
					return usagef("--export %q: size: %v", s, err)
				}
				sp = nbdExportSpec{name: s[:i], size: v}
			}
			for _, p := range specs {
				if p.name == sp.name {
					return usagef("--export %q given twice", sp.name)
				}
			}
			specs = append(specs, sp)
		}
	}
	if (o.base != "" || o.backing != "") && len(specs) > 1 {
		return usagef("--base and --backing apply to a single export")
	}

	// Stores and base references.
	var (
		stores  []record.Store
		bases   []pclog.BaseRef
		closers []io.Closer
	)
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	switch {
	case o.base != "":
		f, err := os.Open(o.base)
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		closers = append(closers, f)
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		if specs[0].size == 0 {
			specs[0].size = st.Size()
		} else if specs[0].size != st.Size() {
			return usagef("--size %d differs from the %d bytes of --base %s", specs[0].size, st.Size(), o.base)
		}
		fmt.Fprintf(env.Stderr, "powercut: hashing base %s (%d bytes)\n", o.base, st.Size())
		_, sum, err := pclog.HashBase(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return fmt.Errorf("hash --base %s: %w", o.base, err)
		}
		abs, _ := filepath.Abs(o.base)
		bases = append(bases, pclog.BaseRef{Device: 0, Size: st.Size(), Hash: sum, Path: abs})
		stores = append(stores, record.NewCOWStore(f, st.Size()))
	case o.backing != "":
		st, err := os.Stat(o.backing)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if specs[0].size == 0 {
				return usagef("--size is required to create --backing %s", o.backing)
			}
			f, err := os.OpenFile(o.backing, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return fmt.Errorf("--backing: %w", err)
			}
			err = f.Truncate(specs[0].size)
			f.Close()
			if err != nil {
				return fmt.Errorf("--backing: %w", err)
			}
		case err != nil:
			return fmt.Errorf("--backing: %w", err)
		default:
			if specs[0].size == 0 {
				specs[0].size = st.Size()
			} else if specs[0].size != st.Size() {
				return usagef("--size %d differs from the %d bytes of --backing %s", specs[0].size, st.Size(), o.backing)
			}
			// The file's current content is the recording's starting point; it is changed in
			// place, so the hash lets a later exploration refuse a base that is not this one.
			f, err := os.Open(o.backing)
			if err != nil {
				return fmt.Errorf("--backing: %w", err)
			}
			_, sum, err := pclog.HashBase(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("hash --backing %s: %w", o.backing, err)
			}
			bases = append(bases, pclog.BaseRef{Device: 0, Size: st.Size(), Hash: sum})
		}
		fs, err := record.OpenFileStore(o.backing, specs[0].size)
		if err != nil {
			return fmt.Errorf("--backing: %w", err)
		}
		closers = append(closers, fs)
		stores = append(stores, fs)
	default:
		for _, sp := range specs {
			if sp.size == 0 {
				return usagef("--size is required (or SIZE in --export %q:SIZE)", sp.name)
			}
			stores = append(stores, record.NewMemStore(sp.size))
		}
	}
	for _, sp := range specs {
		if sp.size%int64(o.blockSize) != 0 {
			return usagef("export %q: size %d is not a multiple of the %d-byte block size", sp.name, sp.size, o.blockSize)
		}
	}

	// The recording (or the plain exports for --no-record).
	var (
		rec  *record.Recorder
		exps []*nbd.Export
	)
	if o.noRecord {
		for i, sp := range specs {
			_, mem := stores[i].(*record.MemStore)
			exps = append(exps, &nbd.Export{Name: sp.name, Description: "powercut (not recording)", Size: sp.size,
				BlockSize: o.blockSize, Store: stores[i], FastZero: mem})
		}
	} else {
		h := pclog.Header{Version: pclog.FormatVersion, Source: "nbd", Bases: bases}
		for i, sp := range specs {
			h.Devices = append(h.Devices, pclog.Device{ID: uint16(i), Name: sp.name, Size: sp.size, SectorSize: o.blockSize})
		}
		var err error
		rec, err = record.Create(o.log, h, stores)
		if err != nil {
			return fmt.Errorf("create log: %w", err)
		}
		defer rec.Close()
		if err := armFailAfter(rec, o.failAfter); err != nil {
			return err
		}
		for i, sp := range specs {
			exps = append(exps, nbd.RecordedExport(sp.name, fmt.Sprintf("powercut recording %s (device %d)", o.log, i), rec.Device(uint16(i))))
		}
	}
	srv, err := nbd.NewServer(exps...)
	if err != nil {
		return err
	}
	srv.Logf = func(format string, args ...any) { fmt.Fprintf(env.Stderr, "powercut: "+format+"\n", args...) }

	ctx, cancel := context.WithCancel(env.Ctx)
	defer cancel()
	l, uri, err := listenNBD(o)
	if err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(l.Addr().String()); err == nil && o.unix == "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			fmt.Fprintf(env.Stderr, "powercut: warning: NBD has no authentication and %s is not a loopback address\n", host)
		}
	}
	var ctlDone chan error
	if o.control != "" {
		var m control.Marker = noRecordMarker{}
		if rec != nil {
			m = rec
		}
		cs, err := control.Listen(o.control, m)
		if err != nil {
			l.Close()
			return err
		}
		ctlDone = make(chan error, 1)
		go func() { ctlDone <- cs.Serve(ctx) }()
	}
	what := "log " + o.log
	if o.noRecord {
		what = "not recording"
	}
	fmt.Fprintf(env.Stderr, "powercut: serving %s (%s)\n", uri, what)
	if o.control != "" {
		fmt.Fprintf(env.Stderr, "powercut: marks: POWERCUT_CONTROL=%s powercut mark NAME\n", o.control)
	}
	if o.readyFile != "" {
		if err := writeFileAtomic(o.readyFile, []byte(uri+"\n")); err != nil {
			l.Close()
			cancel()
			if ctlDone != nil {
				<-ctlDone
			}
			return fmt.Errorf("--ready-file: %w", err)
		}
	}
	fmt.Fprintf(env.Stderr, "powercut: ready; stop with Ctrl-C\n")
	serr := srv.Serve(ctx, l)
	cancel()
	if ctlDone != nil {
		if err := <-ctlDone; err != nil && serr == nil {
			serr = err
		}
	}
	if rec != nil {
		n := rec.Records()
		if err := rec.Close(); err != nil && serr == nil {
			serr = fmt.Errorf("close log: %w", err)
		}
		stopped := ""
		if rec.Stopped() {
			stopped = " (power cut by --fail-after)"
		}
		fmt.Fprintf(env.Stderr, "powercut: stopped; %d records in %s%s\n", n, o.log, stopped)
	} else {
		fmt.Fprintf(env.Stderr, "powercut: stopped\n")
	}
	return serr
}

// armFailAfter sets the power-cut trigger from --fail-after OP_COUNT|mark:NAME.
func armFailAfter(rec *record.Recorder, s string) error {
	switch {
	case s == "":
	case strings.HasPrefix(s, "mark:"):
		name := strings.TrimPrefix(s, "mark:")
		if name == "" {
			return usagef("--fail-after mark: needs a mark name")
		}
		rec.FailAfterMark(name)
	default:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return usagef("--fail-after %q: want a positive operation count or mark:NAME", s)
		}
		rec.FailAfter(n)
	}
	return nil
}

// listenNBD opens the listener and returns the NBD URI clients use.
func listenNBD(o *recordNBDOpts) (net.Listener, string, error) {
	if o.unix != "" {
		if fi, err := os.Lstat(o.unix); err == nil {
			if fi.Mode().Type() != os.ModeSocket {
				return nil, "", fmt.Errorf("--unix %s: exists and is not a socket", o.unix)
			}
			if c, err := net.DialTimeout("unix", o.unix, 200*time.Millisecond); err == nil {
				c.Close()
				return nil, "", fmt.Errorf("--unix %s: another server is listening on it", o.unix)
			}
			if err := os.Remove(o.unix); err != nil {
				return nil, "", fmt.Errorf("--unix %s: removing stale socket: %w", o.unix, err)
			}
		}
		l, err := net.Listen("unix", o.unix)
		if err != nil {
			return nil, "", fmt.Errorf("--unix: %w", err)
		}
		abs, _ := filepath.Abs(o.unix)
		return l, "nbd+unix:///?socket=" + abs, nil
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, "", fmt.Errorf("--listen: %w", err)
	}
	return l, "nbd://" + l.Addr().String(), nil
}

// noRecordMarker answers marks when nothing is recorded.
type noRecordMarker struct{}

func (noRecordMarker) Mark(string) error { return errors.New("not recording (--no-record)") }

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// parsePositiveSize is parseSize refusing zero: every disk needs a size.
func parsePositiveSize(s string) (int64, error) {
	v, err := parseSize(s)
	if err == nil && v <= 0 {
		err = fmt.Errorf("size %q must be positive", s)
	}
	return v, err
}
