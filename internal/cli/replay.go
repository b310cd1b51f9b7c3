package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/pclog"
)

func newReplayCmd(env *Env) *cobra.Command {
	var (
		logPath, stateID, toMark, out string
		bases                         []string
		sectorSize                    int64
	)
	c := &cobra.Command{
		Use:   "replay --log F.pclog [--base IMG] (--state ID | --to-mark M) --out IMG",
		Short: "Rebuild one crash state (or the prefix up to a mark) as an image file",
		Long: `Rebuild exactly one crash state from its ID (as printed by explore, demo or fs), or the
prefix of the log up to and including a mark, into a regular file. With several devices, --out
names device 0's image and the others get a .devN suffix. The image is sparse: blocks of zeros
are holes. --sector-size must be the one the state ID was found with (explore --sector-size).

Exit codes: 0 the image was written, 2 usage or tool error (a state ID the log cannot produce,
a recording that does not exist).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := required(cmd, "log", "out"); err != nil {
				return err
			}
			if err := exclusive(cmd, "state", "to-mark"); err != nil {
				return err
			}
			if stateID == "" && toMark == "" {
				return usagef("--state or --to-mark is required")
			}
			if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
				return usagef("--sector-size %d: want 512 or 4096", sectorSize)
			}
			l, err := pclog.Open(logPath)
			if err != nil {
				return err
			}
			defer l.Close()
			if l.Torn != nil {
				fmt.Fprintf(env.Stderr, "powercut: %s: %v\n", logPath, l.Torn)
			}
			if err := checkSectorSize(l, sectorSize); err != nil {
				return err
			}
			bm, closeBases, _, err := openBases(l, bases)
			if err != nil {
				return err
			}
			defer closeBases()
			src := explore.Source{Log: l, Bases: bm, SectorSize: sectorSize}
			var imgs map[uint16]*image.Image
			if stateID != "" {
				imgs, _, err = explore.Materialize(src, stateID)
			} else {
				imgs, err = explore.PrefixToMark(src, toMark)
			}
			if err != nil {
				return err
			}
			devs := make([]int, 0, len(imgs))
			for d := range imgs {
				devs = append(devs, int(d))
			}
			sort.Ints(devs)
			for k, d := range devs {
				p := out
				if k > 0 {
					p = fmt.Sprintf("%s.dev%d", out, d)
				}
				if err := writeImage(p, imgs[uint16(d)]); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "wrote %s (device %d, %d bytes, %d bytes from the log overlay)\n", p, d, imgs[uint16(d)].Size(), imgs[uint16(d)].OverlayBytes())
			}
			return nil
		},
	}
	c.Flags().StringVar(&logPath, "log", "", "the recording (.pclog)")
	c.Flags().StringArrayVar(&bases, "base", nil, "base image of device 0, or ID=IMG for device ID")
	c.Flags().StringVar(&stateID, "state", "", "state ID to rebuild")
	c.Flags().StringVar(&toMark, "to-mark", "", "rebuild the prefix up to and including this mark")
	c.Flags().StringVar(&out, "out", "", "output image file")
	c.Flags().Int64Var(&sectorSize, "sector-size", 0, "logical sector size the state ID was generated with (explore --sector-size), 512 or 4096")
	return c
}

// writeImage writes img to path atomically (temporary file, then rename), sparse: blocks that
// read as zeros are left as holes, so a 1 GiB device holding 64 KiB of data takes 64 KiB.
func writeImage(path string, img *image.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".powercut-replay-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := writeSparse(tmp, img, img.Size()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeSparse copies size bytes of r to f, skipping 4 KiB blocks of zeros (holes), then sets
// the file's size.
func writeSparse(f *os.File, r io.ReaderAt, size int64) error {
	const chunk, block = 1 << 20, 4096
	buf := make([]byte, chunk)
	zero := make([]byte, block)
	for off := int64(0); off < size; off += chunk {
		n := int(min(chunk, size-off))
		if _, err := r.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return err
		}
		for b := 0; b < n; b += block {
			e := min(b+block, n)
			if bytes.Equal(buf[b:e], zero[:e-b]) {
				continue
			}
			if _, err := f.WriteAt(buf[b:e], off+int64(b)); err != nil {
				return err
			}
		}
	}
	return f.Truncate(size)
}
