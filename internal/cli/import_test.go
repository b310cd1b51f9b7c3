package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"github.com/powercut/powercut/internal/testenv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"

	"github.com/powercut/powercut/pclog"
)

// dmFixture returns the path of a file of the real-kernel fixtures, skipping the test if they
// are absent.
func dmFixture(t *testing.T, rel string) string { return testenv.Fixture(t, rel) }

func unzstd(t *testing.T, path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var b bytes.Buffer
	b.Grow(128<<20 + 1)
	if _, err := b.ReadFrom(d); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func runDM(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestImportExportDMLogWrites imports the real kernel recording (compressed) with its base image,
// and exports it back to the original bytes.
func TestImportExportDMLogWrites(t *testing.T) {
	logZst := dmFixture(t, "ext4-ordered/log.bin.zst")
	baseZst := dmFixture(t, "ext4-ordered/base.img.zst")
	dir := t.TempDir()
	pcl := filepath.Join(dir, "f.pclog")

	code, out, errs := runDM("import", "dm-log-writes", "--dm-log", logZst, "--log", pcl, "--base", baseZst)
	if code != 0 {
		t.Fatalf("import exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{
		"Imported 150 entries", "nr_entries 150", "112 writes (1073152 bytes)", "21 flushes without data",
		"2 discards (104886272 bytes)", "15 marks",
		"2 DISCARD, 8 FLUSH (no data), 13 FLUSH|FUA|META (no data), 1 FUA, 17 FUA|META, 15 MARK, 84 META, 10 WRITE",
		"mount@0, fsync-1@13", "umount@148, dm-log-writes-end@149", "Device 0: 134217728 bytes (from the base image)",
		"2i+1", "Reading stopped at the end of file at byte 1150464.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("import output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "torn") || strings.Contains(out, "stale") || strings.Contains(out, "interrupted") {
		t.Errorf("import output reports a problem the fixture does not have:\n%s", out)
	}

	base := unzstd(t, baseZst)
	sum := xxh3.Hash128(base).Bytes()
	l, err := pclog.Open(pcl)
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := l.Header.Base(0)
	l.Close()
	if !ok || ref.Size != 128<<20 || ref.Hash != "xxh3-128:"+hex.EncodeToString(sum[:]) {
		t.Errorf("base reference %+v, want 134217728 bytes, xxh3-128:%x", ref, sum)
	}
	// explore and replay check --base with HashBase: it must agree.
	if _, h, err := pclog.HashBase(bytes.NewReader(base)); err != nil || h != ref.Hash {
		t.Errorf("HashBase of the base = %q, %v; the import recorded %q", h, err, ref.Hash)
	}

	logOut := filepath.Join(dir, "log.bin")
	code, out, errs = runDM("export", "dm-log-writes", "--log", pcl, "--out", logOut)
	if code != 0 {
		t.Fatalf("export exit %d, stderr %q", code, errs)
	}
	if !strings.Contains(out, "Exported 150 records") || !strings.Contains(out, "1150464 bytes") {
		t.Errorf("export output: %s", out)
	}
	got, err := os.ReadFile(logOut)
	if err != nil {
		t.Fatal(err)
	}
	want := unzstd(t, logZst)
	clear(want[28:32]) // undefined superblock bytes
	if !bytes.Equal(got, want) {
		t.Errorf("exported log (%d bytes) differs from the original (%d bytes)", len(got), len(want))
	}

	// The uncompressed log imports the same way (seeking past payloads), with --size.
	raw := filepath.Join(dir, "raw.bin")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runDM("import", "dm-log-writes", "--dm-log", raw, "--log", filepath.Join(dir, "g.pclog"), "--size", "128MiB")
	if code != 0 || !strings.Contains(out, "Imported 150 entries") || !strings.Contains(out, "134217728 bytes (from the given size)") || !strings.Contains(out, "starting from zeros") {
		t.Errorf("raw import exit %d:\n%s%s", code, out, errs)
	}
}

// TestImportExportErrors: usage and input problems exit 2 with a message naming the problem.
func TestImportExportErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.bin")
	os.WriteFile(junk, bytes.Repeat([]byte{7}, 4096), 0o644)
	notZstd := filepath.Join(dir, "log.zst")
	os.WriteFile(notZstd, []byte("plain text, not zstd"), 0o644)
	out := filepath.Join(dir, "o.pclog")
	missing := filepath.Join(dir, "missing.bin")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", out, "--bogus"}, "unknown flag: --bogus"},
		{[]string{"import", "dm-log-writes", "--log", out}, "--dm-log LOGIMG is required"},
		{[]string{"import", "dm-log-writes", "--dm-log", junk}, "--log F.pclog is required"},
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", out, "--out", out}, "--out is the old spelling of --log"},
		{[]string{"import", "dm-log-writes", "--dm-log", missing, "--log", out}, missing + ": no such file or directory"},
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", out, "--size", "12X"}, `invalid size "12X"`},
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", out, "--base", missing}, "--base: open " + missing},
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", out}, "bad magic 0x707070707070707"},
		{[]string{"import", "dm-log-writes", "--dm-log", notZstd, "--log", out}, "decompress " + notZstd},
		{[]string{"import", "dm-log-writes", "extra", "--dm-log", junk, "--log", out}, "unknown command \"extra\""},
		{[]string{"import", "nbd-trace"}, `unknown format "nbd-trace"`},
		{[]string{"import"}, "import needs a format"},
		{[]string{"import", "dm-log-writes", "--dm-log", junk, "--log", junk}, "--log " + junk + " is an input of the import"},
		{[]string{"export", "dm-log-writes", "--log", junk, "--out", junk}, "--out " + junk + " is the pclog being exported"},
		{[]string{"export", "dm-log-writes", "--out", out}, "--log F.pclog is required"},
		{[]string{"export", "dm-log-writes", "--log", missing, "--out", out}, missing},
		{[]string{"export", "dm-log-writes", "--log", junk, "--out", out}, "not a pclog file"},
	}
	for _, c := range cases {
		code, stdout, stderr := runDM(c.args...)
		if b, err := os.ReadFile(junk); err != nil || len(b) != 4096 {
			t.Fatalf("%v: the input %s was damaged", c.args, junk)
		}
		if code != ExitError || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %q", c.args, code, stderr, c.want)
		}
		if stdout != "" && !strings.Contains(stdout, "Usage") {
			t.Errorf("%v: unexpected output %q", c.args, stdout)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: a failed command left %s behind", c.args, out)
			os.Remove(out)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "0": 0, "128M": 128 << 20, "128m": 128 << 20, "1G": 1 << 30, "1GiB": 1 << 30, "2KB": 2048,
		"3T": 3 << 40, "512B": 512, " 64MiB ": 64 << 20, "1.5G": 3 << 29, "8191P": 0,
	}
	delete(good, "8191P")
	for s, want := range good {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for s, why := range map[string]string{
		"": "want a number", "M": "want a number", "12X": "want a number", "-1M": "negative", "+5": "want a number",
		"iB": "needs a unit", "5iB": "needs a unit", "8388608T": "too large", "1.0000001K": "not a whole number",
		"1e3": "want a number", "0x10": "want a number", "NaN": "want a number", "1_000": "want a number", "Inf": "want a number",
	} {
		if got, err := parseSize(s); err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "\""+s+"\"") {
			t.Errorf("parseSize(%q) = %d, %v; want an error naming the input and %q", s, got, err, why)
		}
	}
}
