package infra

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{Wrap("attach a loop device", errors.New("losetup: no free loop device")), true},
		{fmt.Errorf("write results: %w", &os.PathError{Op: "write", Path: "r.jsonl", Err: syscall.ENOSPC}), true},
		{errors.New("--model: unknown model"), false},
		{fmt.Errorf("open log: %w", os.ErrNotExist), false},
	} {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("Retryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if Wrap("x", nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}
}
