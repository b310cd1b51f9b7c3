package fsharness_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/powercut/powercut/internal/cli"
	"github.com/powercut/powercut/internal/fsharness"
	"github.com/powercut/powercut/pclog"
)

func tempDirsNamed(prefix string) map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir(os.TempDir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) || strings.HasPrefix(e.Name(), "powercut-fs-zfs-") {
			m[e.Name()] = true
		}
	}
	return m
}

// powercut fs validates every flag before creating anything; a successful run deletes its files
// unless --keep; a kept recording is explored again with another check without recording.
func TestFSFiles(t *testing.T) {
	require(t, "ext4")
	before := tempDirsNamed("powercut-fs-ext4-")
	var so, se bytes.Buffer
	for _, args := range [][]string{
		{"fs", "--fs", "zfs", "--workload", workload},
		{"fs", "--fs", "ext4"},
		{"fs", "--fs", "ext4", "--workload", workload, "--sector-size", "1024"},
		{"fs", "--fs", "ext4", "--log", "x.pclog"},
	} {
		if code := cli.Run(context.Background(), args, &so, &se); code != cli.ExitError {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	for d := range tempDirsNamed("powercut-fs-ext4-") {
		if !before[d] {
			t.Errorf("a usage error left %s behind", d)
		}
	}
	// A passing run without --keep leaves no directory.
	so.Reset()
	se.Reset()
	if code := cli.Run(context.Background(), []string{"fs", "--fs", "ext4", "--workload", workload, "--check", check, "--model", "flush"}, &so, &se); code != 0 {
		t.Fatalf("fs: exit %d\n%s\n%s", code, so.String(), lastLines(se.String(), 20))
	}
	if !strings.Contains(so.String(), "deleted") {
		t.Errorf("the run does not say what became of its files:\n%s", so.String())
	}
	for d := range tempDirsNamed("powercut-fs-ext4-") {
		if !before[d] {
			t.Errorf("a passing run without --keep left %s", d)
		}
	}
	// --keep, then explore the kept recording again with a check, without recording.
	keep := t.TempDir()
	so.Reset()
	se.Reset()
	if code := cli.Run(context.Background(), []string{"fs", "--fs", "ext4", "--workload", workload, "--keep", keep, "--model", "flush"}, &so, &se); code != 0 {
		t.Fatalf("fs --keep: exit %d\n%s", code, lastLines(se.String(), 20))
	}
	for _, f := range []string{"fs.pclog", "base.img", "report.json"} {
		if _, err := os.Stat(filepath.Join(keep, f)); err != nil {
			t.Errorf("--keep: %v", err)
		}
	}
	so.Reset()
	se.Reset()
	args := []string{"fs", "--fs", "ext4", "--log", filepath.Join(keep, "fs.pclog"), "--base", filepath.Join(keep, "base.img"), "--check", check, "--model", "flush"}
	if code := cli.Run(context.Background(), args, &so, &se); code != 0 || !strings.Contains(so.String(), "checked") || strings.Contains(se.String(), "running workload") {
		t.Fatalf("re-exploring a kept recording: exit %d\n%s\n%s", code, so.String(), lastLines(se.String(), 20))
	}
}

// --sector-size 4096: the recording goes through a 4 KiB-sector loop device, the log says so,
// every recorded operation is 4 KiB-aligned, and torn states therefore never tear inside 4 KiB
// (the model tears in units of the header's sector size).
func TestFSSectorSize4096(t *testing.T) {
	require(t, "ext4")
	keep := t.TempDir()
	var so, se bytes.Buffer
	args := []string{"fs", "--fs", "ext4", "--sector-size", "4096", "--workload", workload, "--check", check, "--model", "torn", "--states", "4", "--keep", keep}
	if code := cli.Run(context.Background(), args, &so, &se); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, so.String(), lastLines(se.String(), 20))
	}
	l, err := pclog.Open(filepath.Join(keep, fsharness.LogName))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if d, _ := l.Header.Device(0); d.SectorSize != 4096 {
		t.Errorf("header sector size %d, want 4096", d.SectorSize)
	}
	n := 0
	for i, e := range l.Entries {
		if e.Kind == pclog.KindWrite || e.Kind == pclog.KindDiscard || e.Kind == pclog.KindWriteZeroes {
			n++
			if e.Offset%4096 != 0 || e.Length%4096 != 0 {
				t.Errorf("op %d (%s %d bytes at %d) is not 4 KiB-aligned", i, e.Kind, e.Length, e.Offset)
			}
		}
	}
	if n == 0 {
		t.Error("no data operation recorded")
	}
}
