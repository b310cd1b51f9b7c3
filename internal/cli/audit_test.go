package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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

// qemu-nbd serving a qcow2 image that lives on the bottom, decoded with qemu-img: the qcow2
// driver orders its metadata and forwards FLUSH, and passes with --cache=writeback and none.
// With --cache=unsafe QEMU 7.2 still forwards FLUSH to an NBD child (its nbd driver flushes
// "to the OS", which cache=unsafe keeps), so it passes too; a qcow2 stack over nbdkit's
// cache=unsafe is caught through the decoder.
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
		{"unsafe", `exec qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=unsafe "$POWERCUT_BOTTOM"`, 0},
		{"over-nbdkit-unsafe", `d=$(mktemp -d); trap 'kill $k 2>/dev/null; wait; rm -rf "$d"' EXIT TERM;
			nbdkit -f -U "$d/s" --filter=cache nbd uri="$POWERCUT_BOTTOM" cache=unsafe & k=$!
			while [ ! -S "$d/s" ]; do sleep 0.05; done
			qemu-nbd -k "$POWERCUT_TOP" -f qcow2 --cache=writeback "nbd+unix:///?socket=$d/s"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "q.pclog")
			code, out, stderr := run(t, "audit", "--size", "8M", "--base", base, "--decode", decode, "--log", log, "--layer", tc.layer, "--workload", wl)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, out, stderr)
			}
			t.Log(lastLine(out))
			auditLeftovers(t)
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
