package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/powercut/powercut/internal/testenv"
)

// The real kernel recording, end to end through the CLI: import, log info, explore under flush
// with the built-in ext4 fsck (no violation), and reorder/drop-k (runs, reports counts).
func TestFixtureImportInfoExplore(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	logBin := dmFixture(t, "ext4-ordered/log.bin.zst")
	base := dmFixture(t, "ext4-ordered/base.img.zst")
	dir := t.TempDir()
	baseImg := filepath.Join(dir, "base.img")
	if err := os.WriteFile(baseImg, unzstd(t, base), 0o444); err != nil {
		t.Fatal(err)
	}
	pcl := filepath.Join(dir, "f.pclog")
	if code, _, errs := run(t, "import", "dm-log-writes", "--dm-log", logBin, "--base", baseImg, "--log", pcl); code != 0 {
		t.Fatalf("import: exit %d: %s", code, errs)
	}
	code, out, errs := run(t, "log", "info", "--json", pcl)
	if code != 0 {
		t.Fatalf("log info: exit %d: %s", code, errs)
	}
	var in LogInfo
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	// The fixture README: 10 WRITE, 84 META, 1 FUA, 17 FUA|META, 8 FLUSH, 13 FLUSH|FUA|META,
	// 2 DISCARD, 15 MARK; 1,073,152 bytes written, 104,886,272 discarded.
	want := map[string]int{"WRITE": 10, "WRITE META": 84, "WRITE FUA": 1, "WRITE FUA|META": 17,
		"FLUSH": 8, "FLUSH FUA|META": 13, "DISCARD": 2, "MARK": 15}
	if len(in.ByKindFlags) != len(want) {
		t.Errorf("kinds/flags: got %v want %v", in.ByKindFlags, want)
	}
	for k, v := range want {
		if in.ByKindFlags[k] != v {
			t.Errorf("%s: got %d want %d", k, in.ByKindFlags[k], v)
		}
	}
	if in.Records != 150 || in.WriteBytes != 1073152 || in.Discarded != 104886272 || len(in.Marks) != 15 {
		t.Errorf("summary: %d records, %d written, %d discarded, %d marks", in.Records, in.WriteBytes, in.Discarded, len(in.Marks))
	}
	code, out, errs = run(t, "explore", "--log", pcl, "--base", baseImg, "--model", "flush", "--fsck", "ext4", "--jobs", "2", "--json")
	if code != 0 {
		t.Fatalf("explore flush fsck: exit %d\n%s\n%s", code, out, errs)
	}
	var res exploreResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.CrashPoints != 40 || res.Checked == 0 || len(res.Violations) != 0 {
		t.Errorf("flush: %+v", res.Report)
	}
	code, out, errs = run(t, "explore", "--log", pcl, "--base", baseImg, "--model", "reorder", "--strategy", "drop-k", "--json")
	if code != 0 {
		t.Fatalf("explore reorder: exit %d\n%s\n%s", code, out, errs)
	}
	res = exploreResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.CrashPoints != 54 || res.States <= res.CrashPoints || res.Distinct == 0 || res.Distinct > res.States {
		t.Errorf("reorder counts: %+v", res.Report)
	}
	t.Logf("reorder drop-k: %d points, %d states, %d distinct", res.CrashPoints, res.States, res.Distinct)
}
