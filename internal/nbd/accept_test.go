package nbd

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first Accepts with EMFILE, as a recorder out of descriptors sees.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors for a moment must not end the recording: the server backs
// off and keeps accepting.
func TestAcceptErrorDoesNotStopServer(t *testing.T) {
	_, _, exps := newRecording(t, 512, []string{""}, []int64{1 << 20})
	srv, err := NewServer(exps...)
	if err != nil {
		t.Fatal(err)
	}
	srv.Logf = t.Logf
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner}
	l.fails.Store(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	// The handshake completes once the failing accepts were retried (dialRaw fails the test
	// otherwise); the connection is closed by the test's cleanup.
	dialRaw(t, inner.Addr().String(), "", false)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
	if n := l.fails.Load(); n >= 0 {
		t.Fatalf("the failing accepts were not retried (%d left)", n)
	}
}
