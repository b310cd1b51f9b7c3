// Package control is the control socket of a running recorder (FUSE or NBD frontend): a workload
// running beside the recorder labels points of the recording with `powercut mark NAME`, which
// connects here.
//
// Why a socket and not a signal or a file: a mark must land in the global order exactly between
// the operations the workload issued before and after asking for it, so the client waits for the
// recorder's answer; a Unix socket gives that round trip, and its mode (0600) restricts it to the
// recorder's owner.
//
// Protocol: one request per line, one reply line per request, any number per connection.
//
//	mark NAME   -> "ok" once the mark is in the log, or "error MESSAGE"
//	ping        -> "ok"
//
// NAME is the rest of the line (it may contain spaces, not newlines).
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EnvSocket is the environment variable naming the control socket; `powercut mark` reads it when
// no --control flag is given.
const EnvSocket = "POWERCUT_CONTROL"

// Marker records marks; *record.Recorder implements it.
type Marker interface {
	Mark(name string) error
}

// maxLine bounds one request line (a mark name is at most 4096 bytes in a pclog).
const maxLine = 8192

// Server is a listening control socket.
type Server struct {
	path string
	ln   *net.UnixListener
	m    Marker

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	// closeDone is closed when Close has removed the socket and closed every connection.
	closeDone chan struct{}
}

// Listen creates the socket at path (replacing a stale socket left by a killed recorder, but
// never another kind of file) with mode 0600. The socket accepts connections once Serve runs;
// clients that connect earlier wait in the backlog, so creating it before starting the workload
// is enough to make `powercut mark` work from the workload's first line.
func Listen(path string, m Marker) (*Server, error) {
	if m == nil {
		return nil, errors.New("control: nil marker")
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another recorder is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing stale socket: %w", path, err)
		}
	}
	// Bind inside a private (0700) directory, chmod, then rename into place: binding at path
	// directly would leave the socket connectable by anyone between bind and chmod.
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".powercut-control-")
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpSock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The file is removed by Close under its final name, not by the listener under the temp name.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmpSock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: chmod: %w", path, err)
	}
	if err := os.Rename(tmpSock, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Server{path: path, ln: ln, m: m, conns: map[net.Conn]struct{}{}, closeDone: make(chan struct{})}, nil
}

// Start listens on path and serves marks in the background until ctx ends or stop is called.
// stop closes the socket, waits for the server and returns its error: the one way every
// frontend (NBD, FUSE, the file-system harness) runs its control socket.
func Start(ctx context.Context, path string, m Marker) (stop func() error, err error) {
	s, err := Listen(path, m)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	var serr error
	return func() error {
		once.Do(func() {
			s.Close()
			serr = <-done
		})
		return serr
	}, nil
}

// Serve accepts connections until ctx is cancelled or Close is called, then closes the socket
// (removing its file) and every open connection. It returns nil on a normal shutdown.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	defer s.Close()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				<-s.closeDone // the socket file is gone once Serve returns
				s.wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("control socket %s: accept: %w", s.path, err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

// Close stops the server; it is idempotent and safe to call concurrently with Serve.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	for _, c := range conns {
		c.Close()
	}
	close(s.closeDone)
	return err
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReaderSize(c, 512)
	for {
		line, err := readLine(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(c, "error %s\n", oneLine(err.Error()))
			}
			return
		}
		reply := s.dispatch(line)
		if _, err := io.WriteString(c, reply+"\n"); err != nil {
			return
		}
	}
}

func (s *Server) dispatch(line string) string {
	cmd, arg, _ := strings.Cut(line, " ")
	switch cmd {
	case "ping":
		return "ok"
	case "mark":
		if arg == "" {
			return "error mark needs a name"
		}
		if err := s.m.Mark(arg); err != nil {
			return "error " + oneLine(err.Error())
		}
		return "ok"
	}
	return fmt.Sprintf("error unknown command %q", cmd)
}

func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
		b = append(b, frag...)
		if len(b) > maxLine {
			return "", fmt.Errorf("request line longer than %d bytes", maxLine)
		}
		if !isPrefix {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// Mark asks the recorder listening at path to record a mark called name and waits until it is in
// the log.
func Mark(path, name string) error {
	return MarkContext(context.Background(), path, name)
}

// MarkContext is Mark with a context bounding the round trip.
func MarkContext(ctx context.Context, path, name string) error {
	if name == "" {
		return errors.New("mark: empty name")
	}
	if strings.ContainsAny(name, "\n\r") {
		return errors.New("mark: name contains a newline")
	}
	if len(name) > 4096 {
		return fmt.Errorf("mark: name of %d bytes is too long (at most 4096)", len(name))
	}
	reply, err := request(ctx, path, "mark "+name)
	if err != nil {
		return err
	}
	if reply != "ok" {
		return fmt.Errorf("mark %q: recorder at %s: %s", name, path, strings.TrimPrefix(reply, "error "))
	}
	return nil
}

func request(ctx context.Context, path, line string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("control socket %s: %w (is the recorder running?)", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", fmt.Errorf("control socket %s: %w", path, err)
	}
	reply, err := readLine(bufio.NewReader(c))
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("control socket %s: %w", path, ctx.Err())
		}
		return "", fmt.Errorf("control socket %s: reading reply: %w", path, err)
	}
	return reply, nil
}
