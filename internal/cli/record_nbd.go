package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/nbd"
)

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

--sector-size 512|4096 is the disks' logical sector size: advertised as the NBD minimum block size
(clients then never send a smaller or misaligned request) and recorded in the log header, where
explore takes it as the unit of tearing.

Runs until SIGINT or SIGTERM, then finishes the requests in flight and closes the log.

Exit codes: 0 stopped cleanly (the log is closed), 2 usage or tool error (do not retry),
3 retryable infrastructure failure (the listening address or log disk could not be set up).`,
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
	f.IntVar(&o.blockSize, "sector-size", 512, "logical sector size: 512 or 4096 (the minimum block size advertised, recorded in the log header; the unit of tearing)")
	f.IntVar(&o.blockSize, "block-size", 512, "same as --sector-size")
	_ = f.MarkDeprecated("block-size", "use --sector-size (the name explore and replay use)")
	f.StringVar(&o.failAfter, "fail-after", "", "simulate a power cut after OP_COUNT operations or at mark:NAME")
	f.BoolVar(&o.noRecord, "no-record", false, "serve without recording (to measure the recorder's overhead)")
	f.StringVar(&o.readyFile, "ready-file", "", "write the server's NBD URI to this file once it accepts connections")
	return c
}

func runRecordNBD(env *Env, o *recordNBDOpts) error {
	cfg, err := o.config()
	if err != nil {
		return err
	}
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(env.Stderr, "powercut: "+format+"\n", args...) }
	r, err := nbd.StartRecorder(env.Ctx, cfg)
	if errors.Is(err, nbd.ErrConfig) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(r.Addr().String()); err == nil && o.unix == "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			fmt.Fprintf(env.Stderr, "powercut: warning: NBD has no authentication and %s is not a loopback address\n", host)
		}
	}
	what := "log " + o.log
	if o.noRecord {
		what = "not recording"
	}
	fmt.Fprintf(env.Stderr, "powercut: serving %s (%s)\n", r.URI(), what)
	if o.control != "" {
		fmt.Fprintf(env.Stderr, "powercut: marks: POWERCUT_CONTROL=%s powercut mark NAME\n", o.control)
	}
	if o.readyFile != "" {
		if err := writeFileAtomic(o.readyFile, []byte(r.URI()+"\n")); err != nil {
			r.Close()
			return fmt.Errorf("--ready-file: %w", err)
		}
	}
	fmt.Fprintf(env.Stderr, "powercut: ready; stop with Ctrl-C\n")
	select {
	case <-env.Ctx.Done():
	case <-r.Done():
	}
	n := r.Records()
	serr := r.Close()
	if o.noRecord {
		fmt.Fprintf(env.Stderr, "powercut: stopped\n")
		return serr
	}
	stopped := ""
	if r.PowerCut() {
		stopped = " (power cut by --fail-after)"
	}
	fmt.Fprintf(env.Stderr, "powercut: stopped; %d records in %s%s\n", n, o.log, stopped)
	return serr
}

// config maps the flags onto the library's configuration.
func (o *recordNBDOpts) config() (nbd.RecorderConfig, error) {
	if o.blockSize != 512 && o.blockSize != 4096 {
		return nbd.RecorderConfig{}, usagef("--sector-size %d: want 512 or 4096", o.blockSize)
	}
	cfg := nbd.RecorderConfig{Unix: o.unix, Base: o.base, Backing: o.backing, Log: o.log, NoRecord: o.noRecord,
		BlockSize: o.blockSize, Control: o.control}
	if o.unix == "" || o.listenSet {
		cfg.Listen = o.listen
	}
	var size int64
	if o.size != "" {
		v, err := parsePositiveSize(o.size)
		if err != nil {
			return cfg, usagef("--size: %v", err)
		}
		size = v
	}
	cfg.Exports = []nbd.ExportSpec{{Size: size}}
	if len(o.exports) > 0 {
		cfg.Exports = cfg.Exports[:0]
		for _, s := range o.exports {
			sp := nbd.ExportSpec{Name: s, Size: size}
			if i := strings.LastIndexByte(s, ':'); i >= 0 {
				v, err := parsePositiveSize(s[i+1:])
				if err != nil {
					return cfg, usagef("--export %q: size: %v", s, err)
				}
				sp = nbd.ExportSpec{Name: s[:i], Size: v}
			}
			cfg.Exports = append(cfg.Exports, sp)
		}
	}
	switch {
	case o.failAfter == "":
	case strings.HasPrefix(o.failAfter, "mark:"):
		cfg.FailAfterMark = strings.TrimPrefix(o.failAfter, "mark:")
		if cfg.FailAfterMark == "" {
			return cfg, usagef("--fail-after mark: needs a mark name")
		}
	default:
		n, err := strconv.ParseUint(o.failAfter, 10, 64)
		if err != nil || n == 0 {
			return cfg, usagef("--fail-after %q: want a positive operation count or mark:NAME", o.failAfter)
		}
		cfg.FailAfter = n
	}
	return cfg, nil
}

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
