package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/powercut/powercut/explore"
)

// Run checks an audit recording: it explores the bottom's crash states (src.Devices is set to
// the bottom) and checks each with a Checker. src.Bases holds the bottom's base (if any).
func Run(ctx context.Context, src explore.Source, cfg Config, opts explore.Options, onViolation func(explore.Found)) (*explore.Report, *Checker, error) {
	src.Devices = []uint16{Bottom}
	chk, err := NewChecker(src.Log, cfg)
	if err != nil {
		return nil, nil, err
	}
	if opts.Model == 0 {
		opts.Model = cfg.Model
	}
	rep, err := explore.Explore(ctx, src, opts, chk, onViolation)
	return rep, chk, err
}

// CommandDecoder runs a shell command (sh -c) that reads the bottom image from the file named
// by $IN and writes the top's view to the file named by $OUT, e.g.
// qemu-img convert -f qcow2 -O raw "$IN" "$OUT". Temporary files go under dir ("" for the
// system's). A command that fails is an undecodable image (ErrUndecodable), except when the
// shell cannot run it (exit 126 or 127): a tool error.
func CommandDecoder(command, dir string) Decoder {
	return func(ctx context.Context, bottom io.ReaderAt, size int64) (io.ReaderAt, func(), error) {
		tmp, err := os.MkdirTemp(dir, "powercut-decode-")
		if err != nil {
			return nil, nil, err
		}
		cleanup := func() { os.RemoveAll(tmp) }
		in, out := filepath.Join(tmp, "bottom.img"), filepath.Join(tmp, "top.img")
		if err := writeSparse(in, bottom, size); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("decode: write the bottom image: %w", err)
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", command)
		cmd.Env = append(os.Environ(), "IN="+in, "OUT="+out)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Run(); err != nil {
			cleanup()
			msg := strings.TrimSpace(stderr.String())
			if len(msg) > 2000 {
				msg = msg[len(msg)-2000:]
			}
			var ee *exec.ExitError
			if ctx.Err() == nil && errors.As(err, &ee) && ee.ExitCode() != 126 && ee.ExitCode() != 127 && ee.ExitCode() >= 0 {
				return nil, nil, fmt.Errorf("%w: %s: %v: %s", ErrUndecodable, command, err, msg)
			}
			return nil, nil, fmt.Errorf("decode command %q: %w: %s", command, err, msg)
		}
		f, err := os.Open(out)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("decode command %q wrote no $OUT: %w", command, err)
		}
		return f, func() { f.Close(); cleanup() }, nil
	}
}

// writeSparse copies size bytes of r to a new file at path, leaving all-zero chunks as holes.
func writeSparse(path string, r io.ReaderAt, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; {
		n := int(min(int64(len(buf)), size-off))
		if m, err := r.ReadAt(buf[:n], off); err != nil && !(err == io.EOF && m == n) {
			if err != io.EOF {
				return err
			}
			clear(buf[m:n])
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
		off += int64(n)
	}
	return f.Close()
}

// DecodeFile decodes the file at in into a new file at out with the decoder (for the top's
// base: the decoded bottom base).
func DecodeFile(ctx context.Context, d Decoder, in string, size int64, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	v, done, err := d(ctx, f, size)
	if err != nil {
		return err
	}
	defer done()
	st, ok := v.(interface{ Stat() (os.FileInfo, error) })
	n := size
	if ok {
		if fi, err := st.Stat(); err == nil {
			n = fi.Size()
		}
	}
	return writeSparse(out, v, n)
}
