package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/audit"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

type auditOpts struct {
	size, layer, decode, listen, workload, log, base, state, out, topOut string
	topLog, bottomLog                                                    string
	model, strategy, discard                                             string
	k, states, jobs                                                      int
	startTimeout                                                         time.Duration
}

func newAuditCmd(env *Env) *cobra.Command {
	var o auditOpts
	c := &cobra.Command{
		Use:   "audit --size N --layer 'CMD' [--decode 'CMD'] [--base IMG] [--workload SCRIPT] [--listen ADDR] [--log F.pclog]",
		Short: "Check a block layer's flush ordering: record above and below it, check every crash state below",
		Long: `Audit a block layer (an NBD server's cache, a qcow2 driver, any program that serves a block
device over NBD on top of another): does every crash state it can leave on the device below
keep what it promised its clients?

powercut serves a recorded bottom export and starts the layer command with
  POWERCUT_BOTTOM  the bottom's NBD URI (nbd+unix://...), the layer's backend
  POWERCUT_TOP     a Unix socket path on which the layer must serve the top
It then serves clients (--listen ADDR, or a Unix socket) through a recording proxy in front of
the layer, and runs --workload SCRIPT (sh -c) with POWERCUT_NBD set to the proxy's URI; without
--workload it serves until Ctrl-C. Both sides are recorded in one global order into --log:
device 0 "top" (what clients asked), device 1 "bottom" (what the layer did below).

Then every crash state of the bottom under --model is decoded into the top's view (identity, or
--decode 'CMD' reading $IN and writing $OUT, e.g. qemu-img convert -f qcow2 -O raw "$IN" "$OUT")
and compared with what the top's model allows at the same crash point: every write the top made
durable (FLUSH acknowledged, FUA completed) must be there, and every sector must hold a version
the top allows. A violation names the top operation, the FLUSH or FUA that made it durable and
the bottom state; 'powercut audit --log F --state ID --out bottom.img' rebuilds that state.

--base IMG is the bottom's initial content (required with --decode: e.g. an empty qcow2 image
made with qemu-img create); the top's size is the decoded base's (identity: --size).

Without --layer, audit checks an existing audit recording (--log). A kernel layer (loop,
dm-crypt, dm-thin) is recorded by two recorders that share no order: its top with dm-log-writes
(imported with 'powercut import dm-log-writes') or through NBD, its bottom with 'powercut record
fuse' or NBD, with the same marks issued into both while the top is idle. --top-log T.pclog
--bottom-log B.pclog merges them on their common marks into --log (which must not exist) and
checks it (docs/audit.md says how the unknown order between two marks is resolved).

Exit codes: 0 no violation, 1 violations found, 2 usage or tool error (the layer did not start,
the decode command could not run).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runAudit(env, cmd, &o) },
	}
	f := c.Flags()
	f.StringVar(&o.size, "size", "", "size of the bottom device (bytes or K/M/G suffix; default: the --base's size)")
	f.StringVar(&o.layer, "layer", "", "command (sh -c) that serves the top on $POWERCUT_TOP over $POWERCUT_BOTTOM")
	f.StringVar(&o.decode, "decode", "", "command (sh -c) that turns the bottom image $IN into the top's view $OUT (default: identity)")
	f.StringVar(&o.base, "base", "", "initial content of the bottom device")
	f.StringVar(&o.listen, "listen", "", "TCP address clients of the top connect to (default: a Unix socket, in POWERCUT_NBD)")
	f.StringVar(&o.workload, "workload", "", "script (sh -c) that drives the top via $POWERCUT_NBD; without it, serve until Ctrl-C")
	f.StringVar(&o.log, "log", "audit.pclog", "the audit recording to write (with --layer or --top-log) or to check")
	f.StringVar(&o.topLog, "top-log", "", "a recording of the layer's top (one device), merged with --bottom-log on their common marks")
	f.StringVar(&o.bottomLog, "bottom-log", "", "a recording of the layer's bottom (one device), merged with --top-log")
	f.StringVar(&o.state, "state", "", "rebuild this bottom state of --log into --out (and its decoded view into --top-out)")
	f.StringVar(&o.out, "out", "", "with --state: file for the bottom image")
	f.StringVar(&o.topOut, "top-out", "", "with --state: file for the top's view of it (decoded with --decode)")
	f.StringVar(&o.model, "model", "reorder", "durability model of both devices: reorder or torn")
	f.StringVar(&o.strategy, "strategy", "drop-k", "state enumeration: exhaustive, drop-k, keep-k, sample")
	f.IntVar(&o.k, "k", 2, "k for drop-k / keep-k")
	f.IntVar(&o.states, "states", 0, "at most N states per crash point (0: all the strategy gives)")
	f.StringVar(&o.discard, "discard", "either", "what a DISCARD leaves: zero, keep, either")
	f.IntVar(&o.jobs, "jobs", 1, "check N states in parallel")
	f.DurationVar(&o.startTimeout, "layer-timeout", 30*time.Second, "how long the layer may take to serve $POWERCUT_TOP")
	return c
}

func runAudit(env *Env, cmd *cobra.Command, o *auditOpts) error {
	m, err := model.ParseModel(o.model)
	if err != nil || (m != model.Reorder && m != model.Torn) {
		return usagef("--model %q: want reorder or torn", o.model)
	}
	strat, err := model.ParseStrategy(o.strategy)
	if err != nil {
		return usagef("--strategy: %v", err)
	}
	pol, err := model.ParseDiscardPolicy(o.discard)
	if err != nil {
		return usagef("--discard: %v", err)
	}
	if err := atLeast(flagMin{"jobs", int64(o.jobs), 1}, flagMin{"k", int64(o.k), 1}, flagMin{"states", int64(o.states), 0}); err != nil {
		return err
	}
	if o.state != "" {
		if o.layer != "" {
			return usagef("--state rebuilds a state of an existing recording: it takes no --layer")
		}
		if o.out == "" && o.topOut == "" {
			return usagef("--state needs --out or --top-out")
		}
		if o.topOut != "" && o.decode == "" {
			o.out, o.topOut = firstNonEmpty(o.out, o.topOut), "" // identity: the top's view is the bottom
		}
		return auditRebuild(env, o)
	}
	if o.out != "" || o.topOut != "" {
		return usagef("--out and --top-out go with --state")
	}
	if (o.topLog == "") != (o.bottomLog == "") {
		return usagef("--top-log and --bottom-log go together")
	}
	if o.topLog != "" {
		if o.layer != "" {
			return usagef("--top-log/--bottom-log merge existing recordings: they take no --layer")
		}
		if err := auditAlign(env, o); err != nil {
			return err
		}
	} else if o.layer == "" {
		if o.workload != "" || o.listen != "" || o.size != "" {
			return usagef("--workload, --listen and --size need --layer (without it, audit checks the recording --log)")
		}
	} else if err := auditRecord(env, o); err != nil {
		return err
	}
	opts := explore.Options{Model: m, Strategy: strat, Discard: pol, K: o.k, States: o.states, Jobs: o.jobs, Minimize: explore.MinimizeOff}
	return auditCheck(env, o, opts)
}

// auditAlign merges the recordings of a layer's top and bottom into the audit recording o.log.
func auditAlign(env *Env, o *auditOpts) error {
	if _, err := os.Stat(o.log); err == nil {
		return usagef("--log %s exists: the merged recording is written there (remove it or name another file)", o.log)
	}
	top, err := pclog.Open(o.topLog)
	if err != nil {
		return fmt.Errorf("--top-log: %w", err)
	}
	defer top.Close()
	bottom, err := pclog.Open(o.bottomLog)
	if err != nil {
		return fmt.Errorf("--bottom-log: %w", err)
	}
	defer bottom.Close()
	info, err := audit.Align(top, bottom, o.log)
	if err != nil {
		os.Remove(o.log)
		return err
	}
	fmt.Fprintf(env.Stderr, "powercut: merged %s (%d ops) and %s (%d ops) on %d common marks into %s\n",
		o.topLog, info.TopOps, o.bottomLog, info.BottomOps, len(info.Marks), o.log)
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// auditRecord runs the layer and the workload and leaves the recording in o.log.
// auditSize checks the size flags and returns the bottom's size.
func auditSize(o *auditOpts) (int64, error) {
	var bottomSize int64
	if o.size != "" {
		v, err := parsePositiveSize(o.size)
		if err != nil {
			return 0, usagef("--size: %v", err)
		}
		bottomSize = v
	}
	if o.base != "" {
		st, err := os.Stat(o.base)
		if err != nil {
			return 0, usagef("--base: %v", err)
		}
		if bottomSize == 0 {
			bottomSize = st.Size()
		}
	}
	if bottomSize == 0 {
		return 0, usagef("--size is required (or --base)")
	}
	if o.decode != "" && o.base == "" {
		return 0, usagef("--decode needs --base: the bottom's initial content (e.g. qemu-img create -f qcow2 base.qcow2 64M), whose decoded view is the top's start")
	}
	return bottomSize, nil
}

func auditRecord(env *Env, o *auditOpts) error {
	bottomSize, err := auditSize(o)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "powercut-audit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	topSize := bottomSize
	if o.decode != "" {
		tb := filepath.Join(dir, "top-base.img")
		if err := audit.DecodeFile(env.Ctx, audit.CommandDecoder(o.decode, dir), o.base, bottomSize, tb); err != nil {
			return fmt.Errorf("decode the --base: %w", err)
		}
		st, err := os.Stat(tb)
		if err != nil {
			return err
		}
		topSize = st.Size()
		os.Remove(tb)
	}
	logf := func(format string, a ...any) { fmt.Fprintf(env.Stderr, "powercut: "+format+"\n", a...) }
	s, err := audit.Start(env.Ctx, audit.SessionConfig{Dir: dir, Log: o.log, BottomSize: bottomSize, BottomBase: o.base,
		TopSize: topSize, Listen: o.listen, Logf: logf})
	if errors.Is(err, audit.ErrConfig) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	defer s.Close()
	layer := shellCmd(o.layer, env.Stderr, "POWERCUT_BOTTOM="+s.BottomURI, "POWERCUT_TOP="+s.TopSocket)
	if err := layer.Start(); err != nil {
		return fmt.Errorf("start the layer: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- layer.Wait() }()
	var layerErr error
	layerDone := false
	alive := func() error {
		select {
		case layerErr = <-exited:
			layerDone = true
			return fmt.Errorf("the layer exited (%v) before serving $POWERCUT_TOP", layerErr)
		default:
			return nil
		}
	}
	stopLayer := func() {
		if layerDone {
			return
		}
		_ = syscall.Kill(-layer.Process.Pid, syscall.SIGTERM)
		select {
		case layerErr = <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-layer.Process.Pid, syscall.SIGKILL)
			layerErr = <-exited
		}
		layerDone = true
	}
	defer stopLayer()
	if err := s.Attach(env.Ctx, o.startTimeout, alive); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "powercut: layer serving; clients connect to %s (recording %s)\n", s.ClientURI, o.log)
	interrupted := false
	if o.workload != "" {
		w := shellCmd(o.workload, env.Stderr, "POWERCUT_NBD="+s.ClientURI)
		w.Stdout = env.Stdout
		if err := w.Start(); err != nil {
			return fmt.Errorf("start the workload: %w", err)
		}
		wdone := make(chan error, 1)
		go func() { wdone <- w.Wait() }()
		var werr error
		select {
		case werr = <-wdone:
		case <-env.Ctx.Done():
			_ = syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
			<-wdone
			interrupted = true
		case layerErr = <-exited:
			layerDone = true
			_ = syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
			<-wdone
			return fmt.Errorf("the layer exited during the workload: %v", layerErr)
		}
		if werr != nil {
			return fmt.Errorf("the workload failed: %w", werr)
		}
	} else {
		fmt.Fprintf(env.Stderr, "powercut: drive the top at POWERCUT_NBD=%s; stop with Ctrl-C\n", s.ClientURI)
		select {
		case <-env.Ctx.Done():
		case layerErr = <-exited:
			layerDone = true
			fmt.Fprintf(env.Stderr, "powercut: the layer exited (%v)\n", layerErr)
		}
	}
	// Clients first, then the layer (it may write back what it holds: still recorded), then
	// the bottom and the log.
	if err := s.StopClients(); err != nil {
		logf("stopping the proxy: %v", err)
	}
	stopLayer()
	if err := s.Close(); err != nil {
		return fmt.Errorf("close the recording: %w", err)
	}
	if interrupted {
		return fmt.Errorf("interrupted: the recording %s is incomplete", o.log)
	}
	return nil
}

// shellCmd runs command with sh -c in its own process group (so that stopping it stops what it
// started), with extra environment variables.
func shellCmd(command string, stderr io.Writer, env ...string) *exec.Cmd {
	c := exec.Command("sh", "-c", command)
	c.Env = append(os.Environ(), env...)
	c.Stdout, c.Stderr = stderr, stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// auditSource opens the recording and the bottom's base.
func auditSource(o *auditOpts) (explore.Source, func(), error) {
	l, err := pclog.Open(o.log)
	if err != nil {
		return explore.Source{}, nil, fmt.Errorf("open the recording: %w", err)
	}
	src := explore.Source{Log: l, Bases: map[uint16]io.ReaderAt{}}
	closers := []func(){func() { l.Close() }}
	done := func() {
		for _, c := range closers {
			c()
		}
	}
	if o.base != "" {
		f, err := os.Open(o.base)
		if err != nil {
			done()
			return src, nil, usagef("--base: %v", err)
		}
		closers = append(closers, func() { f.Close() })
		src.Bases[audit.Bottom] = f
	} else {
		for _, b := range l.Header.Bases {
			if b.Device == audit.Bottom {
				done()
				return src, nil, usagef("the recording starts from a bottom base (%s): give it with --base", b.Path)
			}
		}
	}
	return src, done, nil
}

// topBase is the top's initial content: the bottom's base (identity) or its decoded view.
func topBase(ctx context.Context, o *auditOpts, src explore.Source, dir string) (io.ReaderAt, error) {
	b := src.Bases[audit.Bottom]
	if b == nil {
		if o.decode != "" {
			return nil, usagef("--decode needs --base: the bottom's initial content")
		}
		return nil, nil
	}
	if o.decode == "" {
		return b, nil
	}
	tb := filepath.Join(dir, "top-base.img")
	var size int64
	for _, d := range src.Log.Header.Devices {
		if d.ID == audit.Bottom {
			size = d.Size
		}
	}
	if err := audit.DecodeFile(ctx, audit.CommandDecoder(o.decode, dir), o.base, size, tb); err != nil {
		return nil, fmt.Errorf("decode the --base: %w", err)
	}
	return os.Open(tb)
}

func auditCheck(env *Env, o *auditOpts, opts explore.Options) error {
	src, done, err := auditSource(o)
	if err != nil {
		return err
	}
	defer done()
	dir, err := os.MkdirTemp("", "powercut-audit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tb, err := topBase(env.Ctx, o, src, dir)
	if err != nil {
		return err
	}
	if f, ok := tb.(*os.File); ok && f != src.Bases[audit.Bottom] {
		defer f.Close()
	}
	cfg := audit.Config{TopBase: tb, Model: opts.Model, Policy: opts.Discard}
	if o.decode != "" {
		cfg.Decode = audit.CommandDecoder(o.decode, dir)
	}
	rebuild := func(id string) string {
		line := "powercut audit --log " + shellQuote(o.log)
		if o.base != "" {
			line += " --base " + shellQuote(o.base)
		}
		line += " --state " + shellQuote(id) + " --out bottom.img"
		if o.decode != "" {
			line += " --decode " + shellQuote(o.decode) + " --top-out top.img"
		}
		return line
	}
	rep, chk, err := audit.Run(env.Ctx, src, cfg, opts, func(f explore.Found) { printViolationWith(env.Stdout, f, rebuild) })
	if errors.Is(err, audit.ErrNotAudit) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(rep.Checked) / rep.Seconds
	}
	fmt.Fprintf(env.Stdout, "audit: %d crash points of the bottom, %d states, %d checked (%.0f/s), %d top sectors compared per state: ",
		rep.CrashPoints, rep.States, rep.Checked, rate, chk.Sectors())
	if rep.BadStates == 0 {
		fmt.Fprintln(env.Stdout, "every bottom state keeps the top's promises")
		return nil
	}
	fmt.Fprintf(env.Stdout, "%d bottom states break them (%d violations)\n", rep.BadStates, len(rep.Violations))
	return ErrViolations
}

// auditRebuild writes one bottom state of the recording, and its decoded top view.
func auditRebuild(env *Env, o *auditOpts) error {
	src, done, err := auditSource(o)
	if err != nil {
		return err
	}
	defer done()
	src.Devices = []uint16{audit.Bottom}
	imgs, _, err := explore.Materialize(src, o.state)
	if err != nil {
		return usagef("--state: %v", err)
	}
	img := imgs[audit.Bottom]
	if img == nil {
		return usageError{audit.ErrNotAudit}
	}
	if o.out != "" {
		if err := writeAuditImage(o.out, img, img.Size()); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "powercut: bottom state %s written to %s\n", o.state, o.out)
	}
	if o.topOut != "" {
		dir, err := os.MkdirTemp("", "powercut-audit-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		v, release, err := audit.CommandDecoder(o.decode, dir)(env.Ctx, img, img.Size())
		if err != nil {
			return err
		}
		defer release()
		st, err := v.(*os.File).Stat()
		if err != nil {
			return err
		}
		if err := writeAuditImage(o.topOut, v, st.Size()); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "powercut: its top view written to %s\n", o.topOut)
	}
	return nil
}

func writeAuditImage(path string, r io.ReaderAt, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, size)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
