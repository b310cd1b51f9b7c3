package audit

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/nbd"
	"github.com/powercut/powercut/internal/nbdclient"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// writeback is a Go block layer: a write-back cache over an NBD device below. Writes are
// acknowledged at once and written back by a goroutine each (after delay); a FLUSH waits for
// every write-back in flight, then flushes the device below. The planted bug (acknowledge a
// FLUSH while earlier writes are still in flight below) skips the wait.
type writeback struct {
	down     *nbdclient.Client
	buggy    bool
	delay    time.Duration
	inflight sync.WaitGroup
}

func (w *writeback) Size() int64 { return w.down.Size() }

func (w *writeback) ReadAt(p []byte, off int64) (int, error) {
	w.inflight.Wait()
	return w.down.ReadAt(p, off)
}

func (w *writeback) WriteAt(p []byte, off int64) (int, error) {
	data := append([]byte(nil), p...)
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		time.Sleep(w.delay)
		_, _ = w.down.WriteAt(data, off)
	}()
	return len(p), nil
}

func (w *writeback) Zero(off, n int64) error {
	w.inflight.Wait()
	return w.down.WriteZeroes(off, n)
}

func (w *writeback) Sync() error {
	if !w.buggy {
		w.inflight.Wait()
	}
	return w.down.Flush()
}

// serveLayer runs the layer on the session's top socket until the returned stop is called;
// stop waits for the write-backs, as a clean shutdown does.
func serveLayer(t *testing.T, s *Session, buggy bool) func() {
	t.Helper()
	down, err := nbdclient.DialURL(s.BottomURI)
	if err != nil {
		t.Fatal(err)
	}
	w := &writeback{down: down, buggy: buggy, delay: 20 * time.Millisecond}
	srv, err := nbd.NewServer(&nbd.Export{Name: "", Size: down.Size(), BlockSize: 512, Store: w})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", s.TopSocket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	return func() {
		cancel()
		<-done
		w.inflight.Wait()
		down.Close()
	}
}

// workload writes blocks through the top with FLUSHes and a FUA write, as a file system would.
func workload(t *testing.T, uri string) {
	t.Helper()
	c, err := nbdclient.DialURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	blk := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, 4096) }
	for round := range 3 {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.WriteAt(blk(round*4+i), int64(round*4+i)*4096); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		must(t, c.Flush())
	}
	must(t, c.WriteFUA(blk(20), 20*4096))
}

func auditGoLayer(t *testing.T, buggy bool) *explore.Report {
	dir := t.TempDir()
	log := dir + "/audit.pclog"
	s, err := Start(context.Background(), SessionConfig{Dir: dir, Log: log, BottomSize: 1 << 20, TopSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := serveLayer(t, s, buggy)
	if err := s.Attach(context.Background(), 5*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	workload(t, s.ClientURI)
	must(t, s.StopClients())
	stop()
	must(t, s.Close())
	l, err := pclog.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep, chk, err := Run(context.Background(), explore.Source{Log: l}, Config{Model: model.Reorder}, explore.Options{Minimize: explore.MinimizeOff}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if chk.Sectors() != 13*8 {
		t.Errorf("checked %d top sectors, want %d", chk.Sectors(), 13*8)
	}
	return rep
}

// The planted layer bug is caught, with the FLUSH it breached named; the fixed layer passes.
func TestGoLayerPlantedBug(t *testing.T) {
	rep := auditGoLayer(t, true)
	if len(rep.Violations) == 0 {
		t.Fatalf("buggy layer: no violation in %d states", rep.Checked)
	}
	if d := rep.Violations[0].Detail; !strings.Contains(d, "made so by top FLUSH op") {
		t.Errorf("violation does not name the FLUSH: %s", d)
	}
	t.Logf("buggy: %d states checked, %d bad; first: %s (%s)", rep.Checked, rep.BadStates, rep.Violations[0].Detail, rep.Violations[0].StateID)
	rep = auditGoLayer(t, false)
	if len(rep.Violations) != 0 || rep.Checked == 0 {
		t.Fatalf("fixed layer: %d states, violations %+v", rep.Checked, rep.Violations)
	}
	t.Logf("fixed: %d states checked, none bad", rep.Checked)
}
