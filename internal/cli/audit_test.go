package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// auditWorkload is a libnbd (Python) client: blocks written in rounds, each closed by a FLUSH,
// then a FUA write and a write left unflushed.
const auditWorkload = `import os, nbd
h = nbd.NBD()
h.connect_uri(os.environ["POWERCUT_NBD"])
for r in range(3):
    for i in range(4):
        h.pwrite(bytes([r*4+i+1])*4096, (r*4+i)*4096)
    h.flush()
h.pwrite(b"\x77"*4096, 40*4096, nbd.CMD_FLAG_FUA)
h.pwrite(b"\x55"*4096, 0)
h.shutdown()
`

// libnbdPython finds a Python that imports libnbd's bindings, and writes the workload.
func libnbdPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import nbd").Run() == nil {
			wl := filepath.Join(t.TempDir(), "workload.py")
			if err := os.WriteFile(wl, []byte(auditWorkload), 0o644); err != nil {
				t.Fatal(err)
			}
			return py + " " + wl
		}
	}
	t.Skip("no python3 with libnbd bindings (python3-libnbd)")
	return ""
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// auditLeftovers fails the test when an audit left a socket directory behind.
func auditLeftovers(t *testing.T) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(os.TempDir(), "powercut-audit-*"))
	if len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
}

// nbdkit's cache filter over its nbd plugin pointed at the bottom: cache=writeback flushes the
// cache below on FLUSH and passes; cache=unsafe ignores FLUSH and is caught.
func TestAuditNbdkitCache(t *testing.T) {
	needTools(t, "nbdkit")
	wl := libnbdPython(t)
	for _, tc := range []struct {
		mode string
		code int
	}{{"writeback", 0}, {"unsafe", 1}} {
		t.Run(tc.mode, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "a.pclog")
			layer := `exec nbdkit -f -U "$POWERCUT_TOP" --filter=cache nbd uri="$POWERCUT_BOTTOM" cache=` + tc.mode
			code, out, stderr := run(t, "audit", "--size", "1M", "--log", log, "--layer", layer, "--workload", wl, "--strategy", "exhaustive")
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, out, stderr)
			}
			if tc.code == 1 && !(strings.Contains(out, "made so by top FLUSH op") && strings.Contains(out, "made so by its own FUA") &&
				strings.Contains(out, "powercut audit --log "+log+" --state ")) {
				t.Errorf("violations do not name the FLUSH and the FUA, or lack the rebuild line:\n%s", out)
			}
			t.Log(lastLine(out))
			auditLeftovers(t)
			// The check alone, on the recording just made, gives the same verdict.
			if c2, out2, _ := run(t, "audit", "--log", log, "--strategy", "exhaustive"); c2 != tc.code || verdict(out2) != verdict(out) {
				t.Errorf("re-check: exit %d %q, first run %q", c2, lastLine(out2), lastLine(out))
			}
		})
	}
}

// qcowOnFile is a layer: qemu-nbd serving a qcow2 image that is a file on the bottom export
// (nbdfuse shows the export as a file; nbdkit's blocksize filter turns the page cache's
// unaligned writes into whole sectors; an fsync of the file is an NBD FLUSH of the bottom),
// with the given --cache mode. It tears down in order on SIGTERM.
func qcowOnFile(cache string) string {
	return `d=$(mktemp -d); mkdir "$d/m"
		trap 'kill $q 2>/dev/null; wait $q; fusermount3 -u "$d/m" 2>/dev/null; wait $f; rm -rf "$d"' EXIT
		trap 'exit 0' TERM
		nbdfuse -P "$d/pid" "$d/m/disk" --command nbdkit -s --filter=blocksize nbd uri="$POWERCUT_BOTTOM" & f=$!
		while [ ! -s "$d/pid" ]; do sleep 0.05; done
		qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=` + cache + ` "$d/m/disk" & q=$!
		wait $q`
}

// qemu-nbd serving a qcow2 image that lives on the bottom, decoded with qemu-img. With the
// image opened as a file (the usual setup), --cache=writeback passes (qcow2 orders its metadata
// and fsyncs the file on every FLUSH) and --cache=unsafe is caught (no fsync: an acknowledged
// FUA write or FLUSH never reaches the bottom). With the bottom opened directly as QEMU's NBD
// child, QEMU 7.2 still forwards FLUSH even under --cache=unsafe (its nbd driver flushes "to the
// OS", which cache=unsafe keeps), so that stack is safe and passes, as the audit says; a qcow2
// stack over nbdkit's cache=unsafe is caught through the decoder.
func TestAuditQemuQcow2(t *testing.T) {
	needTools(t, "qemu-nbd", "qemu-img", "nbdkit")
	wl := libnbdPython(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", base, "4M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	decode := `qemu-img convert -f qcow2 -O raw "$IN" "$OUT"`
	for _, tc := range []struct {
		name, layer string
		code        int
	}{
		{"writeback", `exec qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=writeback "$POWERCUT_BOTTOM"`, 0},
		{"none", `exec qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=none "$POWERCUT_BOTTOM"`, 0},
		{"nbd-child-unsafe", `exec qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=unsafe "$POWERCUT_BOTTOM"`, 0},
		{"file-writeback", qcowOnFile("writeback"), 0},
		{"file-unsafe", qcowOnFile("unsafe"), 1},
		{"over-nbdkit-unsafe", `d=$(mktemp -d); trap 'kill $k 2>/dev/null; wait; rm -rf "$d"' EXIT TERM;
			nbdkit -f -U "$d/s" --filter=cache nbd uri="$POWERCUT_BOTTOM" cache=unsafe & k=$!
			while [ ! -S "$d/s" ]; do sleep 0.05; done
			qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=writeback "nbd+unix:///?socket=$d/s"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.name, "file-") {
				needTools(t, "nbdfuse", "fusermount3")
				if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
					t.Skip("needs root and /dev/fuse (nbdfuse)")
				}
			}
			log := filepath.Join(t.TempDir(), "q.pclog")
			code, out, stderr := run(t, "audit", "--size", "8M", "--base", base, "--decode", decode, "--log", log, "--layer", tc.layer, "--workload", wl)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, out, stderr)
			}
			t.Log(lastLine(out))
			auditLeftovers(t)
			if b, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(b), "nbdfuse") {
				t.Errorf("an nbdfuse mount is left:\n%s", b)
			}
		})
	}
}

// verdict is the summary line without the rate, which varies.
func verdict(s string) string {
	return regexp.MustCompile(`\(\d+/s\)`).ReplaceAllString(lastLine(s), "")
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestAuditTopBottomLogs: a layer recorded by two recorders (its top and its bottom, the same
// marks in both while the top is idle) is merged on the marks and checked by
// `powercut audit --top-log --bottom-log`: a layer that writes back after acknowledging FLUSH is
// caught, one that flushes below first passes; mismatched recordings are a usage-level error.
func TestAuditTopBottomLogs(t *testing.T) {
	const size = 64 << 10
	rec := func(t *testing.T, lazy bool) (topPath, botPath string) {
		dir := t.TempDir()
		mk := func(name string) (*record.Recorder, string) {
			p := filepath.Join(dir, name+".pclog")
			r, err := record.Create(p, pclog.Header{Version: pclog.FormatVersion, Devices: []pclog.Device{{ID: 0, Name: name, Size: size, SectorSize: 512}}}, []record.Store{record.NewMemStore(size)})
			if err != nil {
				t.Fatal(err)
			}
			return r, p
		}
		tr, tp := mk("top")
		br, bp := mk("bottom")
		top, bot := tr.Device(0), br.Device(0)
		for r := range 3 {
			var held []int64
			for i := range 4 {
				off := int64(r*4+i) * 4096
				p := bytes.Repeat([]byte{byte(r*4 + i + 1)}, 4096)
				if err := top.Do(&pclog.Record{Kind: pclog.KindWrite, Offset: off, Length: 4096, Data: p}, func() error {
					if lazy {
						held = append(held, off)
						return nil
					}
					return bot.WriteAt(p, off, false)
				}); err != nil {
					t.Fatal(err)
				}
			}
			flush := bot.Flush
			if lazy {
				flush = func() error { return nil }
			}
			if err := top.Do(&pclog.Record{Kind: pclog.KindFlush}, flush); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("fsync-%d", r)
			if err := errors.Join(tr.Mark(name), br.Mark(name)); err != nil {
				t.Fatal(err)
			}
			for _, off := range held {
				if err := bot.WriteAt(bytes.Repeat([]byte{byte(off/4096 + 1)}, 4096), off, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := errors.Join(tr.Close(), br.Close()); err != nil {
			t.Fatal(err)
		}
		return tp, bp
	}
	for _, tc := range []struct {
		lazy bool
		code int
	}{{false, 0}, {true, 1}} {
		tp, bp := rec(t, tc.lazy)
		merged := filepath.Join(t.TempDir(), "merged.pclog")
		code, out, stderr := run(t, "audit", "--top-log", tp, "--bottom-log", bp, "--log", merged)
		if code != tc.code || !strings.Contains(stderr, "on 3 common marks") {
			t.Fatalf("lazy=%v: exit %d, want %d\n%s\n%s", tc.lazy, code, tc.code, out, stderr)
		}
		t.Logf("lazy=%v: %s", tc.lazy, lastLine(out))
		// The merged recording is kept and checks again on its own.
		if c2, _, _ := run(t, "audit", "--log", merged); c2 != tc.code {
			t.Errorf("re-check of the merged recording: exit %d, want %d", c2, tc.code)
		}
		// It is never overwritten.
		if c3, _, stderr := run(t, "audit", "--top-log", tp, "--bottom-log", bp, "--log", merged); c3 != 2 || !strings.Contains(stderr, "exists") {
			t.Errorf("merging onto an existing --log: exit %d, %s", c3, stderr)
		}
	}
	tp, _ := rec(t, false)
	other, _ := smallLog(t) // marks "one" and "two": none in common
	if code, _, stderr := run(t, "audit", "--top-log", tp, "--bottom-log", other, "--log", filepath.Join(t.TempDir(), "x.pclog")); code != 2 || !strings.Contains(stderr, "no mark is in both") {
		t.Errorf("recordings without a common mark: exit %d, want 2 (%s)", code, stderr)
	}
	if code, _, stderr := run(t, "audit", "--top-log", tp); code != 2 || !strings.Contains(stderr, "--bottom-log") {
		t.Errorf("--top-log alone: exit %d, %s", code, stderr)
	}
}
