package nbdclient

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/nbdproto"
	"github.com/powercut/powercut/internal/testenv"
)

// StartNbdkit runs "nbdkit memory SIZE" on a private Unix socket for the test's lifetime and
// returns its nbd+unix URL.
func startNbdkit(t *testing.T, size string) string {
	t.Helper()
	testenv.RequireTool(t, "nbdkit")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command("nbdkit", "-U", sock, "-f", "--exit-with-parent", "memory", size)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			return "nbd+unix:///?socket=" + sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("nbdkit did not create its socket")
	return ""
}

func TestClientAgainstNbdkit(t *testing.T) {
	url := startNbdkit(t, "1M")
	c, err := DialURL(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 1<<20 {
		t.Fatalf("size %d", c.Size())
	}
	// Many requests in flight from concurrent callers.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(g + 1)}, 4096)
			for k := 0; k < 8; k++ {
				off := int64(g*8+k) * 4096
				if _, err := c.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
				q := make([]byte, 4096)
				if _, err := c.ReadAt(q, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, q) {
					errs <- errors.New("read back different data")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(0, 8192); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(8192, 4096); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 12288)
	c.ReadAt(q, 0)
	if !bytes.Equal(q, make([]byte, 12288)) {
		t.Fatal("zeroed/trimmed range does not read as zeros on nbdkit memory")
	}
	// Out of range is refused locally; an error reply is reported with its errno.
	if _, err := c.ReadAt(q, 1<<20); err == nil {
		t.Fatal("read past the end succeeded")
	}
}

func TestBadExport(t *testing.T) {
	testenv.RequireTool(t, "nbdkit")
	if _, err := DialURL("nbd://127.0.0.1:1/x"); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if _, err := DialURL("http://x"); err == nil {
		t.Fatal("bad scheme accepted")
	}
}

// A server that stops answering after the handshake fails the request after ReplyTimeout
// instead of hanging the caller.
func TestReplyTimeout(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const fl = nbdproto.TFlagHasFlags | nbdproto.TFlagSendFlush
	hs := cat(greeting(nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes),
		optReply(nbdproto.OptGo, nbdproto.RepInfo, infoExport(1<<20, fl)),
		optReply(nbdproto.OptGo, nbdproto.RepAck, nil))
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write(hs)
		io.Copy(io.Discard, conn) // read requests, never reply
	}()
	c, err := Dial("unix", ln.Addr().String(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.ReplyTimeout = 100 * time.Millisecond
	if err := c.Flush(); err == nil || !strings.Contains(err.Error(), "no reply within") {
		t.Fatalf("Flush against a silent server: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("the connection still accepts requests after a reply timeout")
	}
}
