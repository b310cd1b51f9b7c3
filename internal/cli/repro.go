package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/pclog"
)

func newReproCmd(env *Env) *cobra.Command {
	var (
		logPath, stateID, out, check, fsck string
		bases                              []string
	)
	c := &cobra.Command{
		Use:   "repro --log F.pclog [--base IMG] --state ID --out DIR [--check CMD | --fsck FS]",
		Short: "Write a directory to attach to a bug report: the crash image, the trimmed log and a rebuild script",
		Long: `Write DIR with what a kernel or storage developer needs to reproduce one crash state:
  crash.img.zst      the crash image (zstd; 'zstd -d --sparse' restores it sparse)
  trimmed.pclog      the recording up to the crash point (the state ID resolves in it to the same image)
  base.img.zst       the base image, when the recording has one
  STATE              the state ID
  rebuild.sh         rebuilds crash.img from trimmed.pclog and reruns the check
  README.txt         what each file is

Exit codes: 0 written, 2 usage or tool error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := required(cmd, "log", "state", "out"); err != nil {
				return err
			}
			if err := exclusive(cmd, "check", "fsck"); err != nil {
				return err
			}
			l, err := pclog.Open(logPath)
			if err != nil {
				return err
			}
			defer l.Close()
			bm, closeBases, basePaths, err := openBases(l, bases)
			if err != nil {
				return err
			}
			defer closeBases()
			src := explore.Source{Log: l, Bases: bm}
			imgs, cand, err := explore.Materialize(src, stateID)
			if err != nil {
				return usagef("--state: %v", err)
			}
			if len(imgs) != 1 {
				return fmt.Errorf("repro handles one device; the recording has %d", len(imgs))
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			img := imgs[0]
			if err := writeZstd(filepath.Join(out, "crash.img.zst"), io.NewSectionReader(img, 0, img.Size())); err != nil {
				return err
			}
			trimmed := filepath.Join(out, "trimmed.pclog")
			if err := trimLog(l, cand.Point.T, trimmed); err != nil {
				return err
			}
			// The trimmed log must give the same image for the same state ID, or it is useless.
			tl, err := pclog.Open(trimmed)
			if err != nil {
				return err
			}
			timgs, _, err := explore.Materialize(explore.Source{Log: tl, Bases: bm}, stateID)
			same := err == nil && sameImage(img, timgs[0])
			tl.Close()
			if !same {
				if err := copyFile(logPath, trimmed); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "powercut: the state does not resolve alone in a trimmed log; %s is the whole recording\n", trimmed)
			}
			baseArg := ""
			if len(basePaths) > 0 {
				f, _ := os.Open(strings.TrimPrefix(basePaths[0], "0="))
				if f != nil {
					err := writeZstd(filepath.Join(out, "base.img.zst"), f)
					f.Close()
					if err != nil {
						return err
					}
					baseArg = " --base base.img"
				}
			}
			if err := os.WriteFile(filepath.Join(out, "STATE"), []byte(stateID+"\n"), 0o644); err != nil {
				return err
			}
			var b strings.Builder
			b.WriteString("#!/bin/sh\n# Rebuild the crash image of state " + stateID + " and rerun its check (made by powercut repro).\nset -e\ncd \"$(dirname \"$0\")\"\n")
			if baseArg != "" {
				b.WriteString("[ -f base.img ] || zstd -q -d --sparse base.img.zst -o base.img\n")
			}
			fmt.Fprintf(&b, "powercut replay --log trimmed.pclog%s --state %s --out crash.img\n", baseArg, shellQuote(stateID))
			switch {
			case fsck != "":
				fmt.Fprintf(&b, "# the check: mount crash.img (journal replay) on a copy, then the read-only fsck\n")
				b.WriteString(fsckLine(fsck))
			case check != "":
				fmt.Fprintf(&b, "POWERCUT_IMAGE=crash.img POWERCUT_STATE=%s POWERCUT_MODEL=%s POWERCUT_LAST_MARK=%s POWERCUT_COVERED_MARKS=%s POWERCUT_CRASH_POINT=%s \\\n  sh -c %s\n",
					shellQuote(stateID), cand.Model, shellQuote(cand.LastMark), shellQuote(strings.Join(cand.CoveredMarks, ",")), shellQuote(cand.Reason), shellQuote(check))
			default:
				b.WriteString("echo \"crash.img rebuilt; run your check on it\"\n")
			}
			if err := os.WriteFile(filepath.Join(out, "rebuild.sh"), []byte(b.String()), 0o755); err != nil {
				return err
			}
			readme := fmt.Sprintf(`powercut crash state %s
model %s, crash point: %s, last mark %q
crash.img.zst   the crash image (%d bytes; zstd -d --sparse crash.img.zst)
trimmed.pclog   the recording up to the crash point
STATE           the state ID
rebuild.sh      rebuilds crash.img from the log and reruns the check
`, stateID, cand.Model, cand.Reason, cand.LastMark, img.Size())
			if baseArg != "" {
				readme += "base.img.zst    the base image the recording starts from\n"
			}
			if err := os.WriteFile(filepath.Join(out, "README.txt"), []byte(readme), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "wrote %s: crash.img.zst, trimmed.pclog, STATE, rebuild.sh, README.txt\n", out)
			return nil
		},
	}
	c.Flags().StringVar(&logPath, "log", "", "the recording (.pclog)")
	c.Flags().StringArrayVar(&bases, "base", nil, "base image of device 0")
	c.Flags().StringVar(&stateID, "state", "", "the crash state ID")
	c.Flags().StringVar(&out, "out", "", "directory to write")
	c.Flags().StringVar(&check, "check", "", "the check command rebuild.sh reruns")
	c.Flags().StringVar(&fsck, "fsck", "", "the file system whose read-only fsck rebuild.sh reruns: ext4, xfs, btrfs")
	return c
}

func fsckLine(fs string) string {
	switch fs {
	case "ext4":
		return "cp --sparse=always crash.img check.img && e2fsck -E journal_only -y check.img >/dev/null 2>&1; e2fsck -fn check.img\n"
	case "xfs":
		return "cp --sparse=always crash.img check.img && d=$(mktemp -d) && mount -o loop check.img \"$d\" && umount \"$d\"; rmdir \"$d\"; xfs_repair -n -f check.img\n"
	case "btrfs":
		return "btrfs check --readonly crash.img\n"
	}
	return ""
}

// trimLog writes the records of l up to the last one submitted before the crash point t, so
// every op index a state ID at t names keeps its meaning.
func trimLog(l *pclog.Log, t uint64, path string) error {
	last := -1
	for i, e := range l.Entries {
		if e.Submit < t {
			last = i
		}
	}
	w, err := pclog.Create(path, l.Header)
	if err != nil {
		return err
	}
	for i := 0; i <= last; i++ {
		r, err := l.Record(i)
		if err != nil {
			w.Close()
			return fmt.Errorf("read log record %d: %w", i, err)
		}
		if err := w.Append(r); err != nil {
			w.Close()
			return fmt.Errorf("write trimmed record %d: %w", i, err)
		}
	}
	return w.Close()
}

// sameImage compares two images byte for byte.
func sameImage(a, b io.ReaderAt) bool {
	type sized interface{ Size() int64 }
	sa, ok1 := a.(sized)
	sb, ok2 := b.(sized)
	if !ok1 || !ok2 || sa.Size() != sb.Size() {
		return false
	}
	const chunk = 1 << 20
	x, y := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < sa.Size(); off += chunk {
		n := min(chunk, sa.Size()-off)
		if _, err := a.ReadAt(x[:n], off); err != nil && err != io.EOF {
			return false
		}
		if _, err := b.ReadAt(y[:n], off); err != nil && err != io.EOF {
			return false
		}
		if !bytes.Equal(x[:n], y[:n]) {
			return false
		}
	}
	return true
}

func writeZstd(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		f.Close()
		return err
	}
	if _, err := io.Copy(enc, r); err != nil {
		enc.Close()
		f.Close()
		return fmt.Errorf("compress %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
