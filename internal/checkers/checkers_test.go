package checkers

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestRunExitCodesAndOutput(t *testing.T) {
	ctx := context.Background()
	out, code, err := Run(ctx, 0, os.Environ(), "/bin/sh", "-c", "echo hello; exit 3")
	if err != nil || code != 3 || out != "hello\n" {
		t.Fatalf("got %q %d %v", out, code, err)
	}
	_, code, err = Run(ctx, 200*time.Millisecond, os.Environ(), "/bin/sh", "-c", "sleep 5")
	if err != nil || code != -2 {
		t.Fatalf("timeout: code %d err %v, want -2", code, err)
	}
}

// A check that leaves a background child holding its output must not hang the explorer: the
// check's own exit decides, and the child is killed with its process group.
func TestRunBackgroundChildDoesNotHang(t *testing.T) {
	start := time.Now()
	out, code, err := Run(context.Background(), 0, os.Environ(), "/bin/sh", "-c", "sleep 30 & echo started; exit 0")
	if err != nil || code != 0 || out != "started\n" {
		t.Fatalf("got %q %d %v", out, code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("waited %v for a background child", d)
	}
	_, code, _ = Run(context.Background(), 0, os.Environ(), "/bin/sh", "-c", "sleep 30 & exit 4")
	if code != 4 {
		t.Fatalf("exit code with a background child: %d, want 4", code)
	}
}
