// Package infra tells a retryable infrastructure failure (a loop device, a mount or a FUSE
// mount could not be set up, the disk is full) from a usage or input error: a batch engine
// should retry the first (exit code 3) and never the second (exit code 2).
package infra

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrRetryable marks a failure of the machine, not of the input: running again (elsewhere or
// later) may succeed.
var ErrRetryable = errors.New("infrastructure failure")

// Wrap marks err as retryable, saying what could not be set up.
func Wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w (%w)", what, err, ErrRetryable)
}

// Retryable reports whether err is a retryable infrastructure failure: marked by Wrap, or out of
// space, memory or file descriptors.
func Retryable(err error) bool {
	return errors.Is(err, ErrRetryable) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
