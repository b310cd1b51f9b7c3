package fstool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// MaxOutput bounds the output Run keeps.
const MaxOutput = 8 << 10

// Run runs a program in its own process group with the given environment and returns its combined
// output (bounded) and exit code (-1: killed by a signal, -2: timed out). The whole group is killed
// when ctx is cancelled or the timeout passes, so nothing is left behind.
func Run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, int, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var buf limitedBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A background child of the check keeps the output pipe open; once the check itself has
	// exited, wait only briefly for it, then the whole group is killed below.
	cmd.WaitDelay = 200 * time.Millisecond
	if err := cmd.Start(); err != nil {
		return "", 0, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return buf.String(), -2, nil
		}
		return buf.String(), -1, ctx.Err()
	}
	// Kill any stragglers left in the group (background children of a shell script).
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			return buf.String(), code, nil
		}
	}
	if err == nil {
		return buf.String(), 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() < 0 {
			return buf.String(), -1, nil
		}
		return buf.String(), ee.ExitCode(), nil
	}
	return buf.String(), 0, fmt.Errorf("run %s: %w", name, err)
}

type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := MaxOutput - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
			b.Buffer.WriteString("\n[output truncated]\n")
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
