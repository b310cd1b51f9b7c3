package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/verify"
)

type verifyOpts struct {
	target, size, offset, bs, rw, mix, policy, track, dumpDir, runtime string
	iodepth, maxFailures                                               int
	ops, fsyncEvery                                                    int64
	seed                                                               uint64
	trackRequired, asJSON, trimZeroes, direct, verifyAll, noFinalFlush bool
}

func newVerifyCmd(env *Env) *cobra.Command {
	o := &verifyOpts{}
	c := &cobra.Command{
		Use:   "verify --target PATH|nbd://HOST[:PORT][/EXPORT] [flags]",
		Short: "Data-integrity workload that tracks every block's version and classifies bad blocks",
		Long: `verify writes self-describing blocks (header with offset, run ID and per-block version, CRC32C,
payload derived from them) and checks every block it reads against a table of the version each
block must hold (8 bytes per block). Unlike fio's verify, an intact but older block is reported:

  stale        an older intact version ("stale: holds version 3 of 7")
  misdirected  a block written for another offset ("misdirected: written for offset 0x7000")
  torn         sectors from two versions ("torn at sector 5 between versions 6 and 7")
  corrupt      anything else that is not an allowed version
  lost-zeroes  a block that must read zeros does not (TRIM only with --trim-zeroes)

Targets: a regular file (created with --size if missing), a block device, or an NBD export
(nbd://host[:port][/export] or nbd+unix:///export?socket=PATH).

--track FILE saves the table at the end of the run (with the target's identity and a checksum)
and loads it at the start of the next run, deleting it as soon as it is loaded, so that a run that
dies can never leave stale expectations. --policy flushed accepts, for each block inherited from
the previous run, any version between the one covered by its last completed flush and the last one
written: what a power cut may leave.

Exit codes: 0 every block verified, 1 verification failures, 2 usage or tool error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd, env, o) },
	}
	f := c.Flags()
	f.StringVar(&o.target, "target", "", "file, block device or nbd:// URL to run against (required)")
	f.StringVar(&o.size, "size", "0", "bytes of the region to use (0: to the end of the target); creates a missing file of this size")
	f.StringVar(&o.offset, "offset", "0", "start of the region on the target")
	f.StringVar(&o.bs, "bs", "4096", "block size (a multiple of 512)")
	f.StringVar(&o.rw, "rw", "randrw", "workload: "+strings.Join(verify.Modes, ", "))
	f.StringVar(&o.mix, "mix", "", "percentages R,W,T[,Z] of reads, writes, trims and write-zeroes (overrides the mode's mix)")
	f.IntVar(&o.iodepth, "iodepth", 1, "operations in flight (concurrent workers; never two on one block)")
	f.Int64Var(&o.ops, "ops", 0, "number of operations (0: one pass over the region, or unlimited with --runtime)")
	f.StringVar(&o.runtime, "runtime", "", "stop after this long (e.g. 30s)")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the block and operation choices")
	f.Int64Var(&o.fsyncEvery, "fsync-every", 0, "flush after every N writes (0: only at the end)")
	f.StringVar(&o.policy, "policy", "completed", "what blocks inherited through --track may hold: completed (the last version) or flushed (any version since the last completed flush)")
	f.StringVar(&o.track, "track", "", "load expectations from FILE at the start (and delete it), save them at the end")
	f.BoolVar(&o.trackRequired, "track-required", false, "fail if the --track file does not exist")
	f.StringVar(&o.dumpDir, "dump-dir", "", "write <target>.<offset>.received/.expected/.complete for every bad block into DIR")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&o.trimZeroes, "trim-zeroes", false, "the target promises that trimmed blocks read as zeros")
	f.BoolVar(&o.direct, "direct", false, "open files and block devices with O_DIRECT")
	f.BoolVar(&o.verifyAll, "verify-all", false, "after the workload, read back and verify every block written")
	f.IntVar(&o.maxFailures, "max-failures", 100, "stop after this many bad blocks")
	f.BoolVar(&o.noFinalFlush, "no-final-flush", false, "do not flush at the end (leave the last writes unflushed, e.g. before cutting power)")
	return c
}

func runVerify(cmd *cobra.Command, env *Env, o *verifyOpts) error {
	if o.target == "" {
		return usagef("--target is required")
	}
	var cfg verify.Config
	var err error
	sizes := []struct {
		name string
		s    string
		dst  *int64
	}{{"--size", o.size, &cfg.Size}, {"--offset", o.offset, &cfg.Offset}, {"--bs", o.bs, &cfg.BlockSize}}
	for _, sz := range sizes {
		if *sz.dst, err = parseSize(sz.s); err != nil {
			return usagef("%s: %v", sz.name, err)
		}
	}
	if _, _, err := verify.ModeMix(o.rw); err != nil {
		return usagef("--rw: %v", err)
	}
	cfg.Mode = o.rw
	if o.mix != "" {
		m, err := verify.ParseMix(o.mix)
		if err != nil {
			return usagef("--mix: %v", err)
		}
		cfg.Mix = &m
	}
	if cfg.Policy, err = verify.ParsePolicy(o.policy); err != nil {
		return usagef("--policy: %v", err)
	}
	if o.runtime != "" {
		if cfg.Runtime, err = time.ParseDuration(o.runtime); err != nil || cfg.Runtime <= 0 {
			return usagef("--runtime %q: want a positive duration such as 30s", o.runtime)
		}
	}
	if o.ops != 0 && cfg.Runtime != 0 {
		return usagef("--ops and --runtime cannot be used together")
	}
	if err := atLeast(flagMin{"iodepth", int64(o.iodepth), 1}, flagMin{"max-failures", int64(o.maxFailures), 1}, flagMin{"ops", o.ops, 0}, flagMin{"fsync-every", o.fsyncEvery, 0}); err != nil {
		return err
	}
	if o.trackRequired && o.track == "" {
		return usagef("--track-required needs --track FILE")
	}
	cfg.IODepth, cfg.Ops, cfg.Seed, cfg.FsyncEvery = o.iodepth, o.ops, o.seed, o.fsyncEvery
	cfg.TrackFile, cfg.TrackRequired, cfg.DumpDir = o.track, o.trackRequired, o.dumpDir
	cfg.TrimZeroes, cfg.VerifyAll, cfg.MaxFailures, cfg.NoFinalFlush = o.trimZeroes, o.verifyAll, o.maxFailures, o.noFinalFlush

	tgt, name, closeFn, err := verify.OpenTarget(o.target, verify.TargetOptions{Direct: o.direct, Create: true, CreateSize: cfg.Offset + cfg.Size})
	if errors.Is(err, verify.ErrNoSize) {
		return usagef("--target %s does not exist: give --size to create it", o.target)
	}
	if err != nil {
		return err
	}
	defer closeFn()
	cfg.DumpName, cfg.TargetName = name, o.target
	if !o.asJSON {
		cfg.OnFailure = func(f verify.Failure) { fmt.Fprintln(env.Stdout, f.Line()) }
	}
	res, err := verify.Run(cmd.Context(), tgt, cfg)
	if res == nil {
		if errors.Is(err, verify.ErrNoTrack) {
			return usagef("%v", err)
		}
		return fmt.Errorf("verify %s: %w", o.target, err)
	}
	if o.asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil {
			return jerr
		}
	} else {
		secs := res.Elapsed.Seconds()
		mb := float64(res.BytesRead+res.BytesWritten) / (1 << 20)
		fmt.Fprintf(env.Stdout, "verify %s: run %s, %d blocks of %d bytes, %d reads, %d writes, %d trims, %d write-zeroes, %d flushes in %.2fs (%.1f MiB/s, %d blocks verified)\n",
			o.target, res.RunID, res.Blocks, res.BlockSize, res.Reads, res.Writes, res.Trims, res.Zeroes, res.Flushes, secs, mb/max(secs, 1e-9), res.Verified)
		fmt.Fprintf(env.Stdout, "tracking: %d bytes per block", res.TrackingBytesPerBlock)
		if res.TrackSaved {
			fmt.Fprintf(env.Stdout, ", saved to %s", o.track)
		}
		fmt.Fprintln(env.Stdout)
		if res.FailureCount > 0 {
			fmt.Fprintf(env.Stdout, "%d bad blocks\n", res.FailureCount)
		}
	}
	if err != nil {
		return fmt.Errorf("verify %s: %w", o.target, err)
	}
	if res.FailureCount > 0 {
		return ErrViolations
	}
	return nil
}
