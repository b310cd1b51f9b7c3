package nbd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// run runs a peer program with a timeout and /usr/bin first in PATH (nbdsh must find the
// system python with libnbd), failing the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH"))
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	close(done)
	return string(out), err
}

func TestNbdinfo(t *testing.T) {
	testenv.RequireTool(t, "nbdinfo")
	_, _, exps := newRecording(t, 4096, []string{"disk"}, []int64{64 << 20})
	addr, _ := serveTCP(t, exps...)
	out := run(t, "nbdinfo", "--json", "nbd://"+addr+"/disk")
	var info struct {
		Structured bool `json:"structured"`
		Exports    []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	if !info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := info.Exports[0]
	for _, k := range []string{"can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn", "can_fast_zero", "can_cache"} {
		if e[k] != true {
			t.Errorf("%s = %v, want true", k, e[k])
		}
	}
	if e["is_read_only"] != false || e["export-name"] != "disk" || e["export-size"] != float64(64<<20) {
		t.Errorf("nbdinfo export: %v", e)
	}
	if e["block_size_minimum"] != float64(4096) || e["block_size_maximum"] != float64(MaxPayload) {
		t.Errorf("block sizes: min %v max %v", e["block_size_minimum"], e["block_size_maximum"])
	}
	if d, _ := e["description"].(string); d != "test export disk" {
		t.Errorf("description %q", d)
	}
	list := run(t, "nbdinfo", "--list", "--json", "nbd://"+addr)
	if !strings.Contains(list, `"export-name": "disk"`) {
		t.Errorf("nbdinfo --list: %s", list)
	}
}

// TestQemuIO: a client nobody here wrote issues writes, a FUA write, a discard, a write-zeroes
// and a flush; the log holds exactly those operations, with FUA where given.
func TestQemuIO(t *testing.T) {
	testenv.RequireTool(t, "qemu-io")
	_, path, exps := newRecording(t, 512, []string{""}, []int64{16 << 20})
	addr, stop := serveTCP(t, exps...)
	out := run(t, "qemu-io", "-t", "none", "-f", "raw",
		"-c", "write -P 0x11 0 64k",
		"-c", "write -f -P 0x22 64k 4k",
		"-c", "discard 1M 128k",
		"-c", "write -z 2M 8k",
		"-c", "flush",
		"-c", "read -P 0x11 0 64k",
		"-c", "read -P 0x22 64k 4k",
		"-c", "read -P 0 2M 8k",
		"nbd://"+addr)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io: %s", out)
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []string
	for _, e := range l.Entries {
		got = append(got, fmt.Sprintf("%s %s %d+%d", e.Kind, e.Flags, e.Offset, e.Length))
	}
	want := []string{
		"WRITE  0+65536",
		"WRITE FUA 65536+4096",
		"DISCARD  1048576+131072",
		"WRITE_ZEROES  2097152+8192",
		"FLUSH  0+0",
	}
	// qemu flushes the device once more when it closes it.
	for len(got) > len(want) && got[len(got)-1] == "FLUSH  0+0" {
		got = got[:len(got)-1]
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	buf := make([]byte, 4096)
	if err := l.ReadData(1, buf, 0); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0x22}, 4096)) {
		t.Fatalf("FUA write data in the log: %v", err)
	}
}

// TestNbdcopyMultiConn copies a random image in and out over four connections each; the
// flush at the end is recorded and covers every write.
func TestNbdcopyMultiConn(t *testing.T) {
	testenv.RequireTool(t, "nbdcopy")
	const size = 32 << 20
	_, path, exps := newRecording(t, 512, []string{""}, []int64{size})
	addr, stop := serveTCP(t, exps...)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	uri := "nbd://" + addr
	run(t, "nbdcopy", "--connections=4", "--flush", src, uri)
	dst := filepath.Join(dir, "dst.img")
	run(t, "nbdcopy", "--connections=4", uri, dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("image read back through nbdcopy differs from what was written")
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var flushes, writes int
	var lastWriteComplete, firstFlushSubmit uint64
	for _, e := range l.Entries {
		switch e.Kind {
		case pclog.KindFlush:
			if flushes == 0 {
				firstFlushSubmit = e.Submit
			}
			flushes++
		case pclog.KindWrite:
			writes++
			lastWriteComplete = max(lastWriteComplete, e.Complete)
		}
	}
	if flushes == 0 || writes == 0 || lastWriteComplete >= firstFlushSubmit {
		t.Fatalf("%d writes (last completed %d), %d flushes (first submitted %d)", writes, lastWriteComplete, flushes, firstFlushSubmit)
	}
}

// TestNbdshMultiConn: writes on one libnbd handle, a FLUSH on another, reads on a third.
func TestNbdshMultiConn(t *testing.T) {
	testenv.RequireTool(t, "nbdsh")
	_, path, exps := newRecording(t, 512, []string{""}, []int64{8 << 20})
	addr, stop := serveTCP(t, exps...)
	script := fmt.Sprintf(`
import nbd
uri = "nbd://%s"
hs = []
for i in range(3):
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn() and h.can_flush() and h.can_fua()
    hs.append(h)
for i in range(64):
    hs[i %% 2].pwrite(bytes([i]) * 4096, i * 4096)
hs[0].pwrite(b"\xee" * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
hs[1].zero(8192, 2 << 20, nbd.CMD_FLAG_NO_HOLE)
hs[2].flush()
for i in range(64):
    assert hs[2].pread(4096, i * 4096) == bytes([i]) * 4096, i
assert hs[2].pread(4096, 1 << 20) == b"\xee" * 4096
assert hs[0].pread(8192, 2 << 20) == bytes(8192)
for h in hs:
    h.shutdown()
print("ok")
`, addr)
	out := run(t, "nbdsh", "-c", script)
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("nbdsh: %s", out)
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Entries) != 67 {
		t.Fatalf("%d records, want 67", len(l.Entries))
	}
	if e := l.Entries[64]; e.Kind != pclog.KindWrite || !e.FUA() || e.Offset != 1<<20 {
		t.Errorf("FUA write recorded as %+v", e)
	}
	if e := l.Entries[66]; e.Kind != pclog.KindFlush {
		t.Errorf("last record %+v, want FLUSH", e)
	}
}

// TestFioVerify: fio's nbd engine (libnbd) writes with iodepth 16 and verifies every block.
func TestFioVerify(t *testing.T) {
	testenv.RequireTool(t, "fio")
	_, path, exps := newRecording(t, 512, []string{""}, []int64{64 << 20})
	addr, stop := serveTCP(t, exps...)
	out, err := runErr(t, "fio", "--name=verify", "--ioengine=nbd", "--uri=nbd://"+addr,
		"--rw=randwrite", "--bs=4k", "--size=16m", "--iodepth=16", "--verify=crc32c",
		"--verify_fatal=1", "--do_verify=1", "--fsync=64", "--verify_state_save=0")
	if err != nil || strings.Contains(out, "verify:") && strings.Contains(out, "bad") {
		t.Fatalf("fio: %v\n%s", err, out)
	}
	if !strings.Contains(out, "err= 0") {
		t.Fatalf("fio reported an error:\n%s", out)
	}
	stop()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var writes, flushes int
	for _, e := range l.Entries {
		switch e.Kind {
		case pclog.KindWrite:
			writes++
		case pclog.KindFlush:
			flushes++
		}
	}
	if writes < 4096 || flushes == 0 {
		t.Fatalf("%d writes and %d flushes recorded, want >= 4096 writes (16 MiB / 4 KiB) and flushes", writes, flushes)
	}
}
