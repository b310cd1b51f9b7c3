package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type marks struct {
	mu    sync.Mutex
	names []string
}

func (m *marks) Mark(name string) error {
	if name == "bad" {
		return errors.New("refused")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.names = append(m.names, name)
	return nil
}

func TestMarkRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	m := &marks{}
	s, err := Listen(path, m)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	for _, n := range []string{"fsync-1", "with spaces 2"} {
		if err := Mark(path, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := Mark(path, "bad"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("refused mark: %v", err)
	}
	if err := Mark(path, "a\nb"); err == nil {
		t.Fatal("mark with newline accepted")
	}
	if got := strings.Join(m.names, ","); got != "fsync-1,with spaces 2" {
		t.Fatalf("marks %q", got)
	}
	// A second server on the same live socket is refused.
	if _, err := Listen(path, m); err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
	if err := Mark(path, "late"); err == nil {
		t.Fatal("mark after shutdown succeeded")
	}
}
