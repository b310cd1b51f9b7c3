package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// logFullBlock is the distinct 4 KiB content the client writes for (tag, i): the 8-byte
// pattern "<tag><i as 7 digits>" repeated. The Python side builds the same bytes.
func logFullBlock(tag byte, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%c%07d", tag, i)), 512)
}

// TestRecordNBDLogFull: a full log device must fail the client's I/O, never drop records
// silently. The log lives on a 1 MiB tmpfs; an nbdsh client writes distinct 4 KiB blocks (with a
// FLUSH every few writes) until a write fails, checks the error and that the server still
// serves, then a filler file is deleted to free space and further writes must succeed again.
// The log must open cleanly and hold exactly the operations the client saw acknowledged.
func TestRecordNBDLogFull(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nbdsh", "mount", "umount")
	bin := nbdBuildPowercut(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "logfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	nbdMust(t, nbdPeerEnv(), "mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", mnt)
	// Registered before the recorder starts: cleanups run last-in first-out, so the recorder
	// (killed by nbdStartRecorder's cleanup if still running) is gone before the unmount.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; trying umount -l", mnt, err, out)
			if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount -l %s: %v: %s", mnt, err, out)
			}
		}
	})
	// The filler is deleted once the log is full, to leave room for more records.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{0xf1}, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(mnt, "r.pclog")
	rec := nbdStartRecorder(t, bin, "--listen", "127.0.0.1:0", "--size", "64M", "--log", logPath)

	const after = 6 // writes after the space was freed
	script := fmt.Sprintf(`
import sys
def blk(tag, i):
    return (b"%%c%%07d" %% (tag, i)) * 512
def out(*a):
    print(*a, flush=True)
h = nbd.NBD(); h.connect_uri(%q)
failed = None
acked = 0
for i in range(4000):
    try:
        h.pwrite(blk(ord("a"), i), i * 4096)
    except nbd.Error as e:
        out("W", i, "err", e.errnum)
        failed = i
        break
    out("W", i, "ok")
    acked += 1
    if acked %% 4 == 0:
        try:
            h.flush()
            out("F", i, "ok")
        except nbd.Error as e:
            out("F", i, "err", e.errnum)
if failed is None:
    out("NOFAIL"); sys.exit(0)
# Still serving: reads of acknowledged blocks return their data.
for i in (0, failed - 1):
    out("R", i, "ok" if h.pread(4096, i * 4096) == blk(ord("a"), i) else "bad")
# Still full: another write must fail too.
try:
    h.pwrite(blk(ord("x"), failed), failed * 4096)
    out("X", failed, "ok")
except nbd.Error as e:
    out("X", failed, "err", e.errnum)
out("FULL")
sys.stdin.readline()
# Room was freed: writes (from the failed offset on) and a flush succeed again.
for k in range(%d):
    i = failed + k
    try:
        h.pwrite(blk(ord("b"), i), i * 4096)
        out("W", i, "ok")
    except nbd.Error as e:
        out("W", i, "err", e.errnum)
try:
    h.flush()
    out("F", failed + %d - 1, "ok")
except nbd.Error as e:
    out("F", failed + %d - 1, "err", e.errnum)
for k in range(%d):
    i = failed + k
    out("R", i, "ok" if h.pread(4096, i * 4096) == blk(ord("b"), i) else "bad")
h.shutdown()
out("DONE")
`, rec.uri, after, after, after, after)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := exec.CommandContext(ctx, "nbdsh", "-c", script)
	cl.Env = nbdPeerEnv()
	cl.WaitDelay = 5 * time.Second
	stdin, err := cl.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var clErr bytes.Buffer
	cl.Stderr = &clErr
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	clDone := false
	t.Cleanup(func() {
		if !clDone {
			cl.Process.Kill()
			cl.Wait()
		}
	})

	// acked is every operation the client saw succeed, in the order issued (the client has one
	// request in flight at a time, so this is also the log's completion order).
	type op struct {
		kind pclog.Kind
		off  int64
		tag  byte
	}
	var (
		acked     []op
		lines     []string
		phase     = 1 // 1: filling, 2: full (waiting), 3: after freeing space
		failedAt  = -1
		failErrno int
		nBefore   int // operations acknowledged before the failed write
		full      bool
		done      bool
	)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "NOFAIL":
			t.Fatalf("wrote 4000 blocks to a log on a 1 MiB tmpfs without an error")
		case len(f) == 1 && f[0] == "DONE":
			done = true
		case len(f) == 1 && f[0] == "FULL":
			full = true
			phase = 2
			// The failed write really did not fit: the log ends at a record boundary and the
			// pages its record needed are more than the tmpfs had free.
			var st syscall.Statfs_t
			if err := syscall.Statfs(mnt, &st); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(logPath)
			if err != nil {
				t.Fatal(err)
			}
			free := int64(st.Bavail) * st.Bsize
			page := st.Bsize
			need := (fi.Size()+pclog.RecHeaderSize+4096+page-1)/page*page - (fi.Size()+page-1)/page*page
			t.Logf("full: log %d bytes, %d bytes free on the tmpfs, the next write record needs %d more", fi.Size(), free, need)
			if need <= free {
				t.Errorf("write %d failed although its record (%d more bytes) fits in the %d bytes free", failedAt, need, free)
			}
			if err := os.Remove(filler); err != nil {
				t.Error(err)
			}
			phase = 3
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				t.Fatalf("resume the client: %v", err)
			}
		case len(f) >= 3:
			i, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("client output %q", line)
			}
			ok := f[2] == "ok"
			switch f[0] {
			case "W":
				tag := byte('a')
				if phase == 3 {
					tag = 'b'
				}
				if ok {
					acked = append(acked, op{pclog.KindWrite, int64(i) * 4096, tag})
				} else if phase == 1 {
					failedAt = i
					failErrno, _ = strconv.Atoi(f[3])
					nBefore = len(acked)
				} else {
					t.Errorf("write %d after freeing space failed: %s", i, line)
				}
			case "F":
				if ok {
					acked = append(acked, op{kind: pclog.KindFlush})
				} else if phase == 3 {
					t.Errorf("flush after freeing space failed: %s", line)
				}
			case "X":
				if ok {
					acked = append(acked, op{pclog.KindWrite, int64(i) * 4096, 'x'})
					t.Errorf("a second write to the full log succeeded: %s", line)
				}
			case "R":
				if !ok {
					t.Errorf("read after the log filled returned wrong data: %s", line)
				}
			}
		}
	}
	werr := cl.Wait()
	clDone = true
	if werr != nil || !done || !full {
		t.Fatalf("client: %v (full %v, done %v)\nstdout:\n%s\nstderr:\n%s\nrecorder:\n%s", werr, full, done, strings.Join(lines, "\n"), clErr.String(), rec.stderr)
	}
	if failedAt < 0 {
		t.Fatalf("no failed write seen:\n%s", strings.Join(lines, "\n"))
	}
	const enospc, eio = int(syscall.ENOSPC), int(syscall.EIO)
	if failErrno != enospc && failErrno != eio {
		t.Errorf("write %d to the full log failed with errno %d, want ENOSPC (%d) or EIO (%d)", failedAt, failErrno, enospc, eio)
	}
	t.Logf("write %d (after %d acknowledged operations) failed with errno %d", failedAt, nBefore, failErrno)

	stderr := rec.stop(t)
	if !strings.Contains(stderr, "no space left on device") {
		t.Errorf("recorder stderr does not report the failed log append:\n%s", stderr)
	}
	t.Logf("recorder:\n%s", stderr)

	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatalf("open the log after a full log device: %v", err)
	}
	defer l.Close()
	if l.Torn != nil {
		t.Errorf("log has a torn tail after a clean stop: %v", l.Torn)
	}
	got := make([]string, len(l.Entries))
	for i, e := range l.Entries {
		got[i] = fmt.Sprintf("%s %d+%d", e.Kind, e.Offset, e.Length)
	}
	want := make([]string, len(acked))
	for i, a := range acked {
		switch a.kind {
		case pclog.KindWrite:
			want[i] = fmt.Sprintf("WRITE %d+4096", a.off)
		default:
			want[i] = "FLUSH 0+0"
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log holds %d records, client saw %d operations acknowledged:\nlog:\n%s\nacknowledged:\n%s",
			len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Each WRITE record carries the acknowledged write's data, so the failed writes (tags 'a' and
	// 'x' at the failed offset) are not in the log under the offset a later write reused.
	buf := make([]byte, 4096)
	for i, a := range acked {
		if a.kind != pclog.KindWrite {
			continue
		}
		if err := l.ReadData(i, buf, 0); err != nil {
			t.Fatal(err)
		}
		if w := logFullBlock(a.tag, int(a.off/4096)); !bytes.Equal(buf, w) {
			t.Errorf("record %d (WRITE at %d): data %q..., want %q...", i, a.off, buf[:8], w[:8])
		}
	}
	t.Logf("log holds the %d acknowledged operations; the failed write %d is not among them", len(acked), failedAt)
}
