package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal pair: stderr of the command goes to the slave (a real
// terminal), the test reads what was drawn from the master.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("skipping: no pseudo-terminals here (%v)", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("skipping: cannot unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("skipping: no pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("skipping: cannot open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// The progress bar (crash points, states checked, rate, violations, ETA) is drawn on a terminal
// and nothing of it appears when stderr is not one.
func TestProgressBarOnlyOnTerminal(t *testing.T) {
	master, slave := openPTY(t)
	var drawn bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			drawn.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	var out bytes.Buffer
	if code := Run(context.Background(), []string{"demo", "--model", "torn"}, &out, slave); code != 0 {
		t.Fatalf("demo on a terminal: exit %d\n%s", code, out.String())
	}
	slave.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	master.Close()
	for _, want := range []string{"crash points", "states checked", "/s)", "violations 0", "ETA"} {
		if !strings.Contains(drawn.String(), want) {
			t.Errorf("terminal output lacks %q:\n%q", want, drawn.String())
		}
	}
	var errb bytes.Buffer
	if code := Run(context.Background(), []string{"demo", "--model", "torn"}, io.Discard, &errb); code != 0 {
		t.Fatalf("demo: exit %d", code)
	}
	if strings.Contains(errb.String(), "states checked") {
		t.Errorf("progress drawn on a non-terminal: %q", errb.String())
	}
}

// BenchmarkDemoDefault times the README's main command, `powercut demo` with its defaults.
func BenchmarkDemoDefault(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if code := Run(context.Background(), []string{"demo"}, io.Discard, io.Discard); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
}
