package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/internal/control"
	"github.com/powercut/powercut/internal/fuserec"
)

func newRecordFuse(env *Env) *cobra.Command {
	var (
		mount, logPath, base, ctl, size string
		debug                           bool
	)
	c := &cobra.Command{
		Use:   "fuse --mount DIR --size N --log F.pclog [--base IMG] [--control SOCK]",
		Short: "Serve a recorded disk image as DIR/disk.img over FUSE (use it through losetup --direct-io=on)",
		Long: `Serve DIR/disk.img through FUSE and record every block operation on it: FUSE WRITE,
FSYNC, FALLOCATE(PUNCH_HOLE) and FALLOCATE(ZERO_RANGE) become WRITE, FLUSH, DISCARD and
WRITE_ZEROES, with their exact submit/completion order. Put a kernel file system on it with

  losetup --find --show --direct-io=on DIR/disk.img

Runs until SIGINT or SIGTERM, then unmounts (detaching loop devices still on disk.img) and
closes the log. With --base the disk starts as a copy-on-write view of IMG, which is never
modified. With --control, 'powercut mark NAME' (POWERCUT_CONTROL=SOCK) records marks.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := required(cmd, "mount", "log"); err != nil {
				return err
			}
			var n int64
			if size != "" {
				v, err := parseSize(size)
				if err != nil || v <= 0 {
					return usagef("--size %q: want a positive size (%v)", size, err)
				}
				n = v
			} else if base == "" {
				return usagef("--size is required without --base")
			}
			if n%fuserec.SectorSize != 0 {
				return usagef("--size %d is not a multiple of %d", n, fuserec.SectorSize)
			}
			ctx, cancel := context.WithCancel(env.Ctx)
			defer cancel()
			r, err := fuserec.Start(ctx, fuserec.Options{Mount: mount, Log: logPath, Size: n, Base: base, Debug: debug})
			if err != nil {
				return err
			}
			var stopCtl func() error
			if ctl != "" {
				if stopCtl, err = control.Start(ctx, ctl, r); err != nil {
					r.Close()
					return err
				}
			}
			fmt.Fprintf(env.Stdout, "recording %s (%d bytes) to %s; stop with Ctrl-C\n", r.Path(), r.Size(), logPath)
			select {
			case <-ctx.Done():
			case <-r.Done():
				fmt.Fprintf(env.Stderr, "powercut: %s was unmounted from outside\n", mount)
			}
			cancel()
			err = r.Close()
			if stopCtl != nil {
				if serr := stopCtl(); serr != nil && err == nil {
					err = serr
				}
			}
			recs := r.Recording().Records()
			fmt.Fprintf(env.Stdout, "recorded %d operations to %s\n", recs, logPath)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&mount, "mount", "", "directory to mount the FUSE file system on (disk.img appears in it)")
	f.StringVar(&size, "size", "", "disk size in bytes, or with a K/M/G/T suffix (powers of 1024); default: the base's size")
	f.StringVar(&logPath, "log", "", "pclog file to write")
	f.StringVar(&base, "base", "", "start from this image (read-only, copy-on-write; recorded by size and xxh3-128 hash)")
	f.StringVar(&ctl, "control", "", "control socket for 'powercut mark' (mode 0600)")
	f.BoolVar(&debug, "debug", false, "log every FUSE request to stderr")
	return c
}
