package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// tornImages explores logPath under the torn model (exhaustive) with extra flags, replays every
// torn state with the same flags and returns the images by state ID.
func tornImages(t *testing.T, logPath string, extra ...string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	res := filepath.Join(dir, "r.jsonl")
	args := append([]string{"explore", "--log", logPath, "--model", "torn", "--strategy", "exhaustive", "--out", res}, extra...)
	if code, out := runCLI(t, args...); code != ExitOK {
		t.Fatalf("%v: exit %d\n%s", args, code, out)
	}
	rr, err := readResults(res)
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string][]byte{}
	for _, c := range rr.Checked {
		if !strings.Contains(c.StateID, ":t") {
			continue
		}
		img := filepath.Join(dir, "x.img")
		args := append([]string{"replay", "--log", logPath, "--state", c.StateID, "--out", img}, extra...)
		if code, out := runCLI(t, args...); code != ExitOK {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		imgs[c.StateID] = b
	}
	if len(imgs) == 0 {
		t.Fatalf("no torn state among %d states of %s", len(rr.Checked), logPath)
	}
	return imgs
}

// tearsInside reports the first sector of n bytes within [0, end) of img that holds two
// different byte values (the workloads here write one value per write).
func tearsInside(img []byte, end, n int) (int, bool) {
	for s := 0; s < end; s += n {
		if !bytes.Equal(img[s:s+n], bytes.Repeat(img[s:s+1], n)) {
			return s, true
		}
	}
	return 0, false
}

// record nbd --sector-size 4096 advertises 4 KiB as the minimum and preferred block size (seen
// by nbdinfo, a client nobody here wrote) and records it in the log header, so that explore
// --model torn on that log, with no flag, never tears inside 4 KiB. The same write recorded at
// 512 does tear inside 4 KiB: the check can fail.
func TestRecordNBDSectorSize(t *testing.T) {
	testenv.RequireTool(t, "nbdinfo")
	testenv.RequireTool(t, "qemu-io")
	bin := nbdBuildPowercut(t)
	torn := map[int64]bool{}
	for _, sector := range []int64{4096, 512} {
		dir := t.TempDir()
		logPath := filepath.Join(dir, "r.pclog")
		rec := nbdStartRecorder(t, bin, "--listen", "127.0.0.1:0", "--size", "8M", "--log", logPath, "--sector-size", strconv.FormatInt(sector, 10))
		var info struct {
			Exports []map[string]any
		}
		out := nbdMust(t, nbdPeerEnv(), "nbdinfo", "--json", rec.uri)
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo: %v\n%s", err, out)
		}
		e := info.Exports[0]
		if e["block_size_minimum"] != float64(sector) || e["block_size_preferred"] != float64(max(sector, 4096)) {
			t.Errorf("--sector-size %d: nbdinfo block sizes minimum %v preferred %v", sector, e["block_size_minimum"], e["block_size_preferred"])
		}
		nbdMust(t, nbdPeerEnv(), "qemu-io", "-t", "none", "-f", "raw", "-c", "write -P 0x11 0 16k", "-c", "flush", rec.uri)
		rec.stop(t)
		l, err := pclog.Open(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Header.Devices[0].SectorSize; int64(got) != sector {
			t.Errorf("--sector-size %d: the log header records %d-byte sectors", sector, got)
		}
		l.Close()
		for id, img := range tornImages(t, logPath) {
			if s, ok := tearsInside(img, 16384, 4096); ok {
				torn[sector] = true
				if sector == 4096 {
					t.Errorf("state %s of a 4 KiB-sector recording tears inside the 4 KiB sector at byte %d", id, s)
				}
			}
		}
	}
	if !torn[512] {
		t.Errorf("no state of the 512-byte-sector recording tears inside 4 KiB: the check above cannot fail")
	}
}
