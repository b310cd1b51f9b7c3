// Package conformance runs one script of block operations through every recording frontend
// (in process, NBD with a real libnbd client, FUSE + loop with the kernel as the client, and a
// dm-log-writes export/import round trip) and checks that each frontend's recording holds exactly
// the script's operations and explores to the same crash states as the in-process recording of
// the same script. A frontend runs the steps its operation set can express natively (NBD has no
// PREFLUSH; the loop device sends neither FUA nor PREFLUSH), and is compared with the in-process
// recording of exactly those steps.
package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/dmlogwrites"
	"github.com/powercut/powercut/internal/fuserec"
	"github.com/powercut/powercut/internal/nbd"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

const devSize = 256 << 10

type kind int

const (
	opWrite kind = iota
	opZeroes
	opDiscard
	opFlush
	opMark
)

// step is one operation of the script.
type step struct {
	k             kind
	off, n        int64
	fill          byte
	fua, preflush bool
	name          string
}

func (s step) String() string {
	switch s.k {
	case opWrite:
		return fmt.Sprintf("WRITE[%d,+%d]=%02x fua=%v preflush=%v", s.off, s.n, s.fill, s.fua, s.preflush)
	case opZeroes:
		return fmt.Sprintf("WRITE_ZEROES[%d,+%d] fua=%v", s.off, s.n, s.fua)
	case opDiscard:
		return fmt.Sprintf("DISCARD[%d,+%d]", s.off, s.n)
	case opFlush:
		return "FLUSH"
	}
	return "MARK " + s.name
}

// script covers writes, FUA writes, PREFLUSH writes, FLUSH, DISCARD, WRITE_ZEROES (with and
// without FUA), overwrites and marks, with flushes between phases so exhaustive exploration stays
// small.
var script = []step{
	{k: opMark, name: "start"},
	{k: opWrite, off: 0, n: 1024, fill: 0x11},
	{k: opWrite, off: 8192, n: 2048, fill: 0x22},
	{k: opFlush},
	{k: opMark, name: "m1"},
	{k: opWrite, off: 4096, n: 1024, fill: 0x33, fua: true},
	{k: opWrite, off: 16384, n: 512, fill: 0x44, preflush: true},
	{k: opMark, name: "m2"},
	{k: opDiscard, off: 8192, n: 4096},
	{k: opZeroes, off: 32768, n: 4096},
	{k: opZeroes, off: 49152, n: 1024, fua: true},
	{k: opFlush},
	{k: opMark, name: "m3"},
	{k: opWrite, off: 0, n: 512, fill: 0x55},
	{k: opWrite, off: 65536, n: 1536, fill: 0x66},
	{k: opWrite, off: 66048, n: 512, fill: 0x77},
	{k: opMark, name: "m4"},
	{k: opFlush},
	{k: opMark, name: "end"},
}

// frontend records a script and returns its log.
type frontend struct {
	name string
	// supports says whether the frontend's client can issue the step natively.
	supports func(step) bool
	record   func(t *testing.T, steps []step) string
	// zeroesAsWrites: the format has no WRITE_ZEROES and carries zeros as data (dm-log-writes).
	zeroesAsWrites bool
	// leadingFlushes: the client may flush before the script starts (the kernel opening a
	// block device).
	leadingFlushes bool
}

func all(step) bool { return true }

func frontends() []frontend {
	return []frontend{
		{name: "in-process", supports: all, record: recordInProcess},
		{name: "dm-log-writes round trip", supports: all, record: recordDMLogWrites, zeroesAsWrites: true},
		{name: "nbd (nbdsh)", supports: func(s step) bool { return !s.preflush }, record: recordNBD},
		{name: "fuse+loop (kernel)", supports: func(s step) bool { return !s.fua && !s.preflush }, record: recordFUSE, leadingFlushes: true},
	}
}

func subset(f func(step) bool) []step {
	var out []step
	for _, s := range script {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

// TestConformance: every frontend × the script.
func TestConformance(t *testing.T) {
	for _, fe := range frontends() {
		t.Run(fe.name, func(t *testing.T) {
			steps := subset(fe.supports)
			got := fe.record(t, steps)
			want := recordInProcess(t, steps)
			checkOps(t, fe, got, steps)
			for _, m := range []model.Model{model.Prefix, model.Flush, model.Reorder, model.Torn} {
				g, w := statesAtMarks(t, got, m), statesAtMarks(t, want, m)
				if g != w {
					t.Errorf("%s: the %s recording explores under %s to\n%s\nthe in-process recording of the same steps to\n%s", fe.name, fe.name, m, g, w)
				}
			}
		})
	}
}

func fill(b byte, n int64) []byte { return bytes.Repeat([]byte{b}, int(n)) }

// checkOps: the log holds exactly the steps, in order (a FLUSH the kernel or client adds after
// the last step is ignored).
func checkOps(t *testing.T, fe frontend, path string, steps []step) {
	t.Helper()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []string
	for i, e := range l.Entries {
		s := step{off: e.Offset, n: e.Length, fua: e.FUA(), preflush: e.Preflush(), name: e.Name}
		switch e.Kind {
		case pclog.KindWrite:
			s.k = opWrite
			buf := make([]byte, e.Length)
			if err := l.ReadData(i, buf, 0); err != nil {
				t.Fatal(err)
			}
			s.fill = buf[0]
			if !bytes.Equal(buf, fill(buf[0], e.Length)) {
				s.fill = 0xff // not the uniform fill of any step
			}
		case pclog.KindWriteZeroes:
			s.k = opZeroes
		case pclog.KindDiscard:
			s.k = opDiscard
		case pclog.KindFlush:
			s = step{k: opFlush}
		case pclog.KindMark:
			s = step{k: opMark, name: e.Name}
		}
		got = append(got, s.String())
	}
	var want []string
	for _, s := range steps {
		if fe.zeroesAsWrites && s.k == opZeroes {
			s = step{k: opWrite, off: s.off, n: s.n, fua: s.fua}
		}
		want = append(want, s.String())
	}
	for len(got) > len(want) && got[len(got)-1] == "FLUSH" {
		got = got[:len(got)-1]
	}
	for fe.leadingFlushes && len(got) > len(want) && got[0] == "FLUSH" {
		got = got[1:]
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("recorded operations differ from the script:\n got: %s\nwant: %s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
}

// statesAtMarks explores a log exhaustively under m and returns, for each mark, the sorted
// content hashes of the distinct images of the crash point just after it.
func statesAtMarks(t *testing.T, path string, m model.Model) string {
	t.Helper()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	byMark := map[string]map[string]bool{}
	chk := checkFunc(func(c *explore.Candidate) {
		img := c.Images[0]
		buf := make([]byte, img.Size())
		if _, err := img.ReadAt(buf, 0); err != nil {
			t.Error(err)
		}
		sum := sha256.Sum256(buf)
		mu.Lock()
		defer mu.Unlock()
		if !strings.HasPrefix(c.Reason, "after mark") {
			return
		}
		if byMark[c.LastMark] == nil {
			byMark[c.LastMark] = map[string]bool{}
		}
		byMark[c.LastMark][fmt.Sprintf("%x", sum[:6])] = true
	})
	if _, err := explore.Explore(context.Background(), explore.Source{Log: l}, explore.Options{Model: m, Strategy: model.Exhaustive, Discard: model.DiscardEither}, chk, nil); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var marks []string
	for k := range byMark {
		marks = append(marks, k)
	}
	sort.Strings(marks)
	for _, k := range marks {
		var hs []string
		for h := range byMark[k] {
			hs = append(hs, h)
		}
		sort.Strings(hs)
		fmt.Fprintf(&b, "  %s: %d images %v\n", k, len(hs), hs)
	}
	return b.String()
}

type checkFunc func(*explore.Candidate)

func (f checkFunc) Check(_ context.Context, c *explore.Candidate) ([]explore.Violation, error) {
	f(c)
	return nil, nil
}
func (checkFunc) Reads() explore.Reads { return explore.ReadsLastMark }

// ---- frontends ----

func recordInProcess(t *testing.T, steps []step) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inproc.pclog")
	store := record.NewMemStore(devSize)
	r, err := record.Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: devSize, SectorSize: 512}}}, []record.Store{store})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Device(0)
	for _, s := range steps {
		switch {
		case s.k == opWrite && s.preflush:
			data := fill(s.fill, s.n)
			err = d.Do(&pclog.Record{Kind: pclog.KindWrite, Flags: pclog.FlagPreflush, Offset: s.off, Length: s.n, Data: data}, func() error {
				if err := store.Sync(); err != nil {
					return err
				}
				_, err := store.WriteAt(data, s.off)
				return err
			})
		case s.k == opWrite:
			err = d.WriteAt(fill(s.fill, s.n), s.off, s.fua)
		case s.k == opZeroes:
			err = d.WriteZeroes(s.off, s.n, s.fua)
		case s.k == opDiscard:
			err = d.Discard(s.off, s.n)
		case s.k == opFlush:
			err = d.Flush()
		case s.k == opMark:
			err = r.Mark(s.name)
		}
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func recordDMLogWrites(t *testing.T, steps []step) string {
	t.Helper()
	src := recordInProcess(t, steps)
	l, err := pclog.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dm := filepath.Join(t.TempDir(), "log.dmlw")
	f, err := os.Create(dm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dmlogwrites.Export(l, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(t.TempDir(), "imported.pclog")
	if _, err := dmlogwrites.Import(func() (io.ReadCloser, error) { return os.Open(dm) }, out, dmlogwrites.ImportOptions{Size: devSize}); err != nil {
		t.Fatal(err)
	}
	return out
}

// python is the libnbd script for the steps (nbdsh's handle h), marks through the control socket.
func python(steps []step, ctl string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `import socket
def mark(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(%q)
    s.sendall(("mark " + n + "\n").encode())
    r = s.recv(4096)
    s.close()
    assert r.startswith(b"ok"), r
`, ctl)
	for _, s := range steps {
		flags := "0"
		if s.fua {
			flags = "nbd.CMD_FLAG_FUA"
		}
		switch s.k {
		case opWrite:
			fmt.Fprintf(&b, "h.pwrite(bytes([%d]) * %d, %d, %s)\n", s.fill, s.n, s.off, flags)
		case opZeroes:
			fmt.Fprintf(&b, "h.zero(%d, %d, %s)\n", s.n, s.off, flags)
		case opDiscard:
			fmt.Fprintf(&b, "h.trim(%d, %d)\n", s.n, s.off)
		case opFlush:
			b.WriteString("h.flush()\n")
		case opMark:
			fmt.Fprintf(&b, "mark(%q)\n", s.name)
		}
	}
	return b.String()
}

func recordNBD(t *testing.T, steps []step) string {
	t.Helper()
	testenv.RequireTool(t, "nbdsh")
	dir := t.TempDir()
	path := filepath.Join(dir, "nbd.pclog")
	ctl := filepath.Join(dir, "ctl")
	r, err := nbd.StartRecorder(context.Background(), nbd.RecorderConfig{Unix: filepath.Join(dir, "nbd.sock"), Log: path,
		Exports: []nbd.ExportSpec{{Size: devSize}}, Control: ctl})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("nbdsh", "-u", r.URI(), "-c", python(steps, ctl))
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH")) // Debian's python3 with libnbd first
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func recordFUSE(t *testing.T, steps []step) string {
	t.Helper()
	testenv.RequireFUSE(t)
	testenv.RequireLoop(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fuse.pclog")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := fuserec.Start(ctx, fuserec.Options{Mount: mnt, Log: path, Size: devSize})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, err := exec.Command("losetup", "--find", "--show", "--direct-io=on", r.Path()).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	detached := false
	detach := func() {
		if !detached {
			detached = true
			if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v\n%s", loop, err, out)
			}
		}
	}
	defer detach()
	fd, err := unix.Open(loop, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open %s: %v", loop, err)
	}
	for _, s := range steps {
		switch s.k {
		case opWrite:
			buf := alignedFill(s.fill, s.n)
			_, err = unix.Pwrite(fd, buf, s.off)
		case opZeroes:
			err = ioctlRange(fd, unix.BLKZEROOUT, s.off, s.n)
		case opDiscard:
			err = ioctlRange(fd, unix.BLKDISCARD, s.off, s.n)
		case opFlush:
			err = unix.Fsync(fd)
		case opMark:
			err = r.Mark(s.name)
		}
		if err != nil {
			unix.Close(fd)
			t.Fatalf("%s on %s: %v", s, loop, err)
		}
	}
	unix.Close(fd)
	detach()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// alignedFill returns a page-aligned buffer (O_DIRECT) of n bytes of b.
func alignedFill(b byte, n int64) []byte {
	raw := make([]byte, n+4096)
	off := 4096 - int(uintptrOf(raw)%4096)
	if off == 4096 {
		off = 0
	}
	buf := raw[off : off+int(n)]
	for i := range buf {
		buf[i] = b
	}
	return buf
}

func ioctlRange(fd int, req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptrOfRange(&r))
	if e != 0 {
		return e
	}
	return nil
}

// gated is a store whose writes at one offset wait for a gate, so two overlapping writes (and a
// flush) are in flight together through the real recording API.
type gated struct {
	*record.MemStore
	at   int64
	gate chan struct{}
}

func (g *gated) WriteAt(p []byte, off int64) (int, error) {
	if off == g.at {
		<-g.gate
	}
	return g.MemStore.WriteAt(p, off)
}

// TestConformanceInFlight: operations in flight together are recorded as concurrent (neither
// completed before the other was submitted), a flush submitted while a write is in flight does
// not cover it, and exploration offers both orders of the overlapping pair.
func TestConformanceInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inflight.pclog")
	g := &gated{MemStore: record.NewMemStore(devSize), at: 8192, gate: make(chan struct{})}
	r, err := record.Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: devSize, SectorSize: 512}}}, []record.Store{g})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Device(0)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = d.WriteAt(fill(0xAA, 1024), 8192, false) }() // blocks at the gate
	waitFor(t, func() bool { return r.Seq() >= 1 })
	go func() { defer wg.Done(); _ = d.Flush() }() // submitted while the write is in flight
	waitFor(t, func() bool { return r.Records() >= 1 })
	if err := d.WriteAt(fill(0xBB, 512), 8192+512, false); err != nil { // overlaps nothing yet: other sector
		t.Fatal(err)
	}
	close(g.gate)
	wg.Wait()
	if err := d.WriteAt(fill(0xCC, 1024), 8192, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Mark("done"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var w, f *pclog.Entry
	for i := range l.Entries {
		e := &l.Entries[i]
		if e.Kind == pclog.KindWrite && e.Offset == 8192 && w == nil {
			w = e
		}
		if e.Kind == pclog.KindFlush {
			f = e
		}
	}
	if w == nil || f == nil || !(w.Submit < f.Submit && f.Submit < w.Complete) {
		t.Fatalf("the gated write %+v and the flush %+v are not recorded as in flight together", w, f)
	}
	h, err := model.FromLog(l)
	if err != nil {
		t.Fatal(err)
	}
	pts := h.Points(model.Reorder)
	e := h.Epoch(model.Reorder, model.DiscardEither, pts[len(pts)-1])
	if len(e.Pairs) == 0 {
		t.Errorf("no concurrent overlapping pair at the end: pending %v", e.Pending)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
