package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// nbdBuildPowercut builds the powercut binary into a temporary directory: the recorder runs as
// a child process so tests can kill -9 it.
func nbdBuildPowercut(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "powercut")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/powercut/powercut/cmd/powercut")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// nbdPeerEnv puts /usr/bin first in PATH (nbdsh needs the system python with libnbd).
func nbdPeerEnv(extra ...string) []string {
	return append(append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH")), extra...)
}

// nbdRun runs a program with a two-minute limit and returns its combined output.
func nbdRun(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func nbdMust(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := nbdRun(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// nbdRecorder is a `powercut record nbd` child process.
type nbdRecorder struct {
	cmd    *exec.Cmd
	uri    string
	stderr *bytes.Buffer
	done   chan error
}

// nbdStartRecorder starts the recorder with args plus --ready-file and waits until it serves.
// Cleanup kills it if the test did not stop it.
func nbdStartRecorder(t *testing.T, bin string, args ...string) *nbdRecorder {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(bin, append([]string{"record", "nbd", "--ready-file", ready}, args...)...)
	r := &nbdRecorder{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = r.stderr
	cmd.Stdout = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-r.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			r.uri = strings.TrimSpace(string(b))
			return r
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("recorder exited before serving: %v\n%s", err, r.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorder not ready after 30s:\n%s", r.stderr)
		}
	}
}

// stop sends SIGINT and waits for a clean exit.
func (r *nbdRecorder) stop(t *testing.T) string {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("recorder exited with %v:\n%s", err, r.stderr)
		}
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("recorder did not stop within 30s of SIGINT:\n%s", r.stderr)
	}
	return r.stderr.String()
}

func nbdLogLines(t *testing.T, path string) []string {
	t.Helper()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Torn != nil {
		t.Errorf("log %s has a torn tail after a clean stop: %v", path, l.Torn)
	}
	var got []string
	for _, e := range l.Entries {
		s := fmt.Sprintf("%s %s %d+%d", e.Kind, e.Flags, e.Offset, e.Length)
		if e.Kind == pclog.KindMark {
			s = "MARK " + e.Name
		}
		got = append(got, s)
	}
	return got
}

// TestRecordNBDQemuIO drives the CLI recorder with qemu-io over a Unix socket on a
// copy-on-write base, marks the end with `powercut mark`, and checks the log, `powercut log
// info`, the base reference and that the base file is untouched.
func TestRecordNBDQemuIO(t *testing.T) {
	testenv.RequireTool(t, "qemu-io")
	bin := nbdBuildPowercut(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	baseData := bytes.Repeat([]byte{0x5a}, 4<<20)
	if err := os.WriteFile(base, baseData, 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "r.pclog")
	ctl := filepath.Join(dir, "ctl")
	sock := filepath.Join(dir, "nbd.sock")
	rec := nbdStartRecorder(t, bin, "--unix", sock, "--base", base, "--log", logPath, "--control", ctl)
	if fi, err := os.Stat(ctl); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v mode %v", err, fi.Mode())
	}
	out := nbdMust(t, nbdPeerEnv(), "qemu-io", "-t", "none", "-f", "raw",
		"-c", "read -P 0x5a 0 64k",
		"-c", "write -P 0x11 0 64k",
		"-c", "write -f -P 0x22 64k 4k",
		"-c", "discard 1M 128k",
		"-c", "write -z 2M 8k",
		"-c", "flush",
		"-c", "read -P 0x11 0 64k",
		"-c", "read -P 0x22 64k 4k",
		"-c", "read -P 0x5a 3M 4k",
		"-c", "read -P 0 2M 8k",
		rec.uri)
	if strings.Contains(out, "failed") || strings.Contains(out, "rror") {
		t.Fatalf("qemu-io: %s", out)
	}
	nbdMust(t, nbdPeerEnv("POWERCUT_CONTROL="+ctl), bin, "mark", "after-qemu")
	stderr := rec.stop(t)
	if !strings.Contains(stderr, "serving nbd+unix:///?socket=") {
		t.Errorf("no serving line on stderr:\n%s", stderr)
	}
	for _, p := range []string{sock, ctl} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind: %v", p, err)
		}
	}
	got := nbdLogLines(t, logPath)
	want := []string{"WRITE  0+65536", "WRITE FUA 65536+4096", "DISCARD  1048576+131072", "WRITE_ZEROES  2097152+8192", "FLUSH  0+0"}
	// qemu flushes once more when it closes the device.
	var trimmed []string
	for _, g := range got {
		if g == "FLUSH  0+0" && len(trimmed) >= len(want) {
			continue
		}
		trimmed = append(trimmed, g)
	}
	want = append(want, "MARK after-qemu")
	if strings.Join(trimmed, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	b, err := os.ReadFile(base)
	if err != nil || !bytes.Equal(b, baseData) {
		t.Fatalf("base image modified (%v)", err)
	}
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sum := xxh3.Hash128(baseData).Bytes()
	if br, ok := l.Header.Base(0); !ok || br.Hash != "xxh3-128:"+hex.EncodeToString(sum[:]) || br.Size != 4<<20 || l.Header.Source != "nbd" {
		t.Fatalf("base reference %+v (source %q)", br, l.Header.Source)
	}
	var info, errb bytes.Buffer
	if code := Run(context.Background(), []string{"log", "info", logPath}, &info, &errb); code != 0 {
		t.Fatalf("powercut log info: exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"after-qemu", "WRITE", "DISCARD", "WRITE_ZEROES", "FLUSH"} {
		if !strings.Contains(info.String(), w) {
			t.Errorf("log info does not mention %s:\n%s", w, info.String())
		}
	}
}

// TestRecordNBDFailAfterMark: after --fail-after mark:cut fires, the client sees EIO on every
// request and the log ends with the mark.
func TestRecordNBDFailAfterMark(t *testing.T) {
	testenv.RequireTool(t, "nbdsh")
	bin := nbdBuildPowercut(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "r.pclog")
	ctl := filepath.Join(dir, "ctl")
	rec := nbdStartRecorder(t, bin, "--listen", "127.0.0.1:0", "--size", "8M", "--log", logPath, "--control", ctl, "--fail-after", "mark:cut")
	before := fmt.Sprintf(`
h = nbd.NBD(); h.connect_uri(%q)
h.pwrite(b"a" * 4096, 0)
h.pwrite(b"b" * 4096, 4096, nbd.CMD_FLAG_FUA)
h.flush()
print("ok")`, rec.uri)
	if out := nbdMust(t, nbdPeerEnv(), "nbdsh", "-c", before); strings.TrimSpace(out) != "ok" {
		t.Fatalf("nbdsh before the cut: %s", out)
	}
	nbdMust(t, nbdPeerEnv(), bin, "mark", "--control", ctl, "cut")
	after := fmt.Sprintf(`
import errno
h = nbd.NBD(); h.connect_uri(%q)
for name, op in [("write", lambda: h.pwrite(b"c" * 4096, 8192)),
                 ("flush", lambda: h.flush()),
                 ("trim", lambda: h.trim(4096, 0)),
                 ("zero", lambda: h.zero(4096, 0)),
                 ("read", lambda: h.pread(4096, 0))]:
    try:
        op()
        print(name, "succeeded")
    except nbd.Error as e:
        print(name, "errno", e.errnum)
`, rec.uri)
	out := nbdMust(t, nbdPeerEnv(), "nbdsh", "-c", after)
	for _, op := range []string{"write", "flush", "trim", "zero", "read"} {
		if !strings.Contains(out, op+" errno 5") {
			t.Errorf("%s after the cut: want EIO, got:\n%s", op, out)
		}
	}
	if out, err := nbdRun(t, nbdPeerEnv(), bin, "mark", "--control", ctl, "late"); err == nil {
		t.Errorf("mark after the cut succeeded: %s", out)
	}
	stderr := rec.stop(t)
	if !strings.Contains(stderr, "power cut") {
		t.Errorf("stderr does not report the power cut:\n%s", stderr)
	}
	got := nbdLogLines(t, logPath)
	want := []string{"WRITE  0+4096", "WRITE FUA 4096+4096", "FLUSH  0+0", "MARK cut"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRecordNBDKill9: the recorder is killed with SIGKILL while a client issues FUA writes and
// write+FLUSH pairs; every FUA write and FLUSH the client saw acknowledged is in the log.
func TestRecordNBDKill9(t *testing.T) {
	testenv.RequireTool(t, "nbdsh")
	bin := nbdBuildPowercut(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "r.pclog")
	rec := nbdStartRecorder(t, bin, "--listen", "127.0.0.1:0", "--size", "64M", "--log", logPath)
	script := fmt.Sprintf(`
import sys
h = nbd.NBD(); h.connect_uri(%q)
for i in range(16000):
    if i %% 2:
        h.pwrite(bytes([i %% 251]) * 4096, i * 4096, nbd.CMD_FLAG_FUA)
        print("fua", i, flush=True)
    else:
        h.pwrite(bytes([i %% 251]) * 4096, i * 4096)
        h.flush()
        print("flush", i, flush=True)
`, rec.uri)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := exec.CommandContext(ctx, "nbdsh", "-c", script)
	cl.Env = nbdPeerEnv()
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cl.Stderr = &bytes.Buffer{}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Process.Kill(); cl.Wait() })
	var acked []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		acked = append(acked, sc.Text())
		if len(acked) == 400 {
			// Kill while the client keeps going: requests are in flight.
			if err := rec.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-rec.done
			rec.done <- nil
		}
	}
	cl.Wait()
	if len(acked) < 400 {
		t.Fatalf("client stopped after %d acknowledgements: %s", len(acked), cl.Stderr)
	}
	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type key struct {
		kind pclog.Kind
		fua  bool
		off  int64
	}
	have := map[key]bool{}
	flushes := 0
	for _, e := range l.Entries {
		have[key{e.Kind, e.FUA(), e.Offset}] = true
		if e.Kind == pclog.KindFlush {
			flushes++
		}
	}
	ackFlushes := 0
	for _, a := range acked {
		f := strings.Fields(a)
		i, _ := strconv.Atoi(f[1])
		off := int64(i) * 4096
		switch f[0] {
		case "fua":
			if !have[key{pclog.KindWrite, true, off}] {
				t.Errorf("acknowledged FUA write %d missing from the log", i)
			}
		case "flush":
			ackFlushes++
			if !have[key{pclog.KindWrite, false, off}] {
				t.Errorf("write %d, acknowledged before an acknowledged FLUSH, missing from the log", i)
			}
		}
	}
	if flushes < ackFlushes {
		t.Errorf("log holds %d FLUSH records, client saw %d acknowledged", flushes, ackFlushes)
	}
	t.Logf("client saw %d acknowledgements; log holds %d records (torn tail: %v)", len(acked), len(l.Entries), l.Torn)
}

// TestRecordNBDExt4Chain puts a kernel file system on the recorder (nbdfuse -> loop with
// direct I/O -> ext4), writes files with fsync and marks, and explores the recording under the
// flush model with fsck: no crash state may be a broken file system.
func TestRecordNBDExt4Chain(t *testing.T) {
	testenv.RequireLoop(t)
	testenv.RequireFUSE(t)
	testenv.RequireTool(t, "nbdfuse", "fusermount3", "mkfs.ext4", "e2fsck", "mount", "umount")
	bin := nbdBuildPowercut(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "ext4.pclog")
	ctl := filepath.Join(dir, "ctl")
	env := nbdPeerEnv("POWERCUT_CONTROL=" + ctl)
	// The file system is made before recording (mkfs promises nothing until it returns) and
	// served copy-on-write with --base: the recording starts from a valid file system.
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, 64<<20); err != nil {
		t.Fatal(err)
	}
	nbdMust(t, env, "mkfs.ext4", "-q", "-F", base)
	rec := nbdStartRecorder(t, bin, "--listen", "127.0.0.1:0", "--size", "64M", "--base", base, "--log", logPath, "--control", ctl)

	// nbdfuse serves the export as fusedir/nbd until unmounted.
	fusedir := filepath.Join(dir, "fuse")
	if err := os.Mkdir(fusedir, 0o755); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(dir, "nbdfuse.pid")
	nf := exec.Command("nbdfuse", "-P", pidfile, fusedir, rec.uri)
	nf.Env = env
	var nfOut bytes.Buffer
	nf.Stdout, nf.Stderr = &nfOut, &nfOut
	if err := nf.Start(); err != nil {
		t.Fatal(err)
	}
	nfDone := make(chan error, 1)
	go func() { nfDone <- nf.Wait() }()
	fuseMounted := true
	t.Cleanup(func() {
		if fuseMounted {
			exec.Command("fusermount3", "-u", fusedir).Run()
		}
		select {
		case <-nfDone:
		case <-time.After(10 * time.Second):
			nf.Process.Kill()
			<-nfDone
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(pidfile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse not ready: %s", nfOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	img := filepath.Join(fusedir, "nbd")

	loop := strings.TrimSpace(nbdMust(t, env, "losetup", "--direct-io=on", "--find", "--show", img))
	loopAttached := true
	t.Cleanup(func() {
		if loopAttached {
			exec.Command("losetup", "-d", loop).Run()
		}
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	nbdMust(t, env, "mount", "-t", "ext4", loop, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	})
	nbdMust(t, env, bin, "mark", "mounted")
	for i := range 4 {
		p := filepath.Join(mnt, fmt.Sprintf("file%d", i))
		data := bytes.Repeat([]byte(fmt.Sprintf("file %d line\n", i)), 5000*(i+1))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		nbdMust(t, env, bin, "mark", fmt.Sprintf("fsync-%d", i))
	}
	nbdMust(t, env, "sync")
	nbdMust(t, env, bin, "mark", "synced")
	nbdMust(t, env, "umount", mnt)
	mounted = false
	nbdMust(t, env, "losetup", "-d", loop)
	loopAttached = false
	nbdMust(t, env, "fusermount3", "-u", fusedir)
	fuseMounted = false
	select {
	case <-nfDone:
		nfDone <- nil
	case <-time.After(30 * time.Second):
		t.Fatalf("nbdfuse still running after unmount")
	}
	rec.stop(t)

	l, err := pclog.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var writes, flushes, marks int
	for _, e := range l.Entries {
		switch e.Kind {
		case pclog.KindWrite:
			writes++
		case pclog.KindFlush:
			flushes++
		case pclog.KindMark:
			marks++
		}
	}
	l.Close()
	if writes == 0 || flushes == 0 || marks != 6 {
		t.Fatalf("recording holds %d writes, %d flushes, %d marks", writes, flushes, marks)
	}
	out, err := nbdRun(t, env, bin, "explore", "--log", logPath, "--base", base, "--model", "flush", "--fsck", "ext4", "--jobs", "2")
	if err != nil {
		t.Fatalf("powercut explore --model flush --fsck ext4: %v\n%s", err, out)
	}
	if !strings.Contains(out, "violations: 0") || strings.Contains(out, "checked: 0\n") {
		t.Fatalf("explore did not check states cleanly:\n%s", out)
	}
	t.Logf("%d writes, %d flushes; explore:\n%s", writes, flushes, out)
}
