package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String() + errb.String()
}

// A demo run with a planted bug prints one block per group with the minimal state and its
// explanation, journals its results (--out), renders its report (--report and 'powercut report'),
// resumes from its journal to the same summary, and 'powercut repro' writes a directory whose
// crash image is the state's image.
func TestGroupsResultsReportResumeRepro(t *testing.T) {
	dir := t.TempDir()
	logPath, res, html := filepath.Join(dir, "demo.pclog"), filepath.Join(dir, "r.jsonl"), filepath.Join(dir, "r.html")
	code, out := runCLI(t, "demo", "--bug", "P5", "--keep-log", logPath, "--out", res, "--report", html)
	if code != ExitViolations {
		t.Fatalf("demo --bug P5: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "group(s) of the same cause") || !strings.Contains(out, "cause: op ") || !strings.Contains(out, "minimal state: ") {
		t.Errorf("no group block with a minimal state:\n%s", out)
	}
	if n := strings.Count(out, "VIOLATION "); n != 1 {
		t.Errorf("%d violation lines streamed; want one per group (1)", n)
	}
	first, err := readResults(res)
	if err != nil || first.Summary == nil || len(first.Checked) != first.Summary.Checked {
		t.Fatalf("results %s: %v; %d checked lines, summary %+v", res, err, len(first.Checked), first.Summary)
	}
	if st, err := os.Stat(html); err != nil || st.Size() < 5000 {
		t.Fatalf("--report: %v", err)
	}
	html2 := filepath.Join(dir, "r2.html")
	if code, out := runCLI(t, "report", res, "--out", html2); code != ExitOK {
		t.Fatalf("report: exit %d\n%s", code, out)
	}
	// Resuming a finished run checks nothing again and ends with the same summary.
	if code, out := runCLI(t, "demo", "--bug", "P5", "--keep-log", filepath.Join(dir, "again.pclog"), "--resume", res); code != ExitViolations {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	again, err := readResults(res)
	if err != nil || again.Summary == nil || again.Summary.Checked != first.Summary.Checked || len(again.Summary.Violations) != len(first.Summary.Violations) || len(again.Checked) != len(first.Checked) {
		t.Fatalf("resumed: %v; checked %d lines (first run %d)", err, len(again.Checked), len(first.Checked))
	}
	// A results file of another run is refused.
	if code, out := runCLI(t, "demo", "--bug", "P2", "--keep-log", filepath.Join(dir, "p2.pclog"), "--resume", res); code != ExitError || !strings.Contains(out, "another run") {
		t.Errorf("resume with another run's results: exit %d\n%s", code, out)
	}
	// repro
	state := first.Summary.Groups[0].Minimal.StateID
	rdir := filepath.Join(dir, "repro")
	if code, out := runCLI(t, "repro", "--log", logPath, "--state", state, "--out", rdir); code != ExitOK {
		t.Fatalf("repro: exit %d\n%s", code, out)
	}
	img := filepath.Join(dir, "crash.img")
	if code, out := runCLI(t, "replay", "--log", filepath.Join(rdir, "trimmed.pclog"), "--state", state, "--out", img); code != ExitOK {
		t.Fatalf("replay from the trimmed log: exit %d\n%s", code, out)
	}
	want, _ := os.ReadFile(img)
	f, err := os.Open(filepath.Join(rdir, "crash.img.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, _ := zstd.NewReader(f)
	defer dec.Close()
	got, err := io.ReadAll(dec)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("repro's crash image (%d bytes, %v) differs from the state's replayed image (%d bytes)", len(got), err, len(want))
	}
	for _, name := range []string{"STATE", "rebuild.sh", "README.txt"} {
		if _, err := os.Stat(filepath.Join(rdir, name)); err != nil {
			t.Errorf("repro: %v", err)
		}
	}
}

// explore without a checker says it only generated states, and prints no "checked" count.
func TestExploreWithoutCheckerSaysSo(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "demo.pclog")
	if code, out := runCLI(t, "demo", "--keep-log", logPath); code != ExitOK {
		t.Fatalf("demo: exit %d\n%s", code, out)
	}
	code, out := runCLI(t, "explore", "--log", logPath, "--model", "reorder")
	if code != ExitOK || strings.Contains(out, "checked:") || !strings.Contains(out, "no checker given") {
		t.Errorf("explore without a checker: exit %d\n%s", code, out)
	}
}

// Usage errors point to the subcommand's own help and name what was wrong; detection is by
// type, not by cobra's wording.
func TestUsageErrorsPointToTheirCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"explore", "--modle", "x"}, "Run 'powercut explore --help'"},
		{[]string{"explore", "--model", "bogus", "--log", "x"}, "--model: unknown model"},
		{[]string{"replay", "extra"}, "Run 'powercut replay --help'"},
		{[]string{"record", "nbdd"}, "unknown frontend \"nbdd\""},
		{[]string{"explroe"}, "Run 'powercut --help'"},
		{[]string{"report"}, "Run 'powercut report --help'"},
	} {
		code, out := runCLI(t, c.args...)
		if code != ExitError || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", c.args, code, c.want, out)
		}
	}
}

// Every command's help states its exit codes.
func TestEveryHelpStatesExitCodes(t *testing.T) {
	root := NewRoot(&Env{Ctx: context.Background(), Stdout: io.Discard, Stderr: io.Discard})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !strings.Contains(c.Long, "Exit codes") {
			t.Errorf("%s --help does not state its exit codes", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

// The old spellings of renamed flags still work, with a warning: --log for import's dm-log-writes
// input (now --dm-log, since --log names a .pclog everywhere) and --in for export's recording.
func TestRenamedFlagsStillWork(t *testing.T) {
	dir := t.TempDir()
	pcl := filepath.Join(dir, "d.pclog")
	if code, out := runCLI(t, "demo", "--keep-log", pcl); code != ExitOK {
		t.Fatalf("demo: %d\n%s", code, out)
	}
	dm := filepath.Join(dir, "d.dmlw")
	code, out := runCLI(t, "export", "dm-log-writes", "--in", pcl, "--out", dm)
	if code != ExitOK || !strings.Contains(out, "deprecated") {
		t.Fatalf("export --in: exit %d\n%s", code, out)
	}
	code, out = runCLI(t, "import", "dm-log-writes", "--log", dm, "--out", filepath.Join(dir, "back.pclog"))
	if code != ExitOK || !strings.Contains(out, "deprecated") {
		t.Fatalf("import --log: exit %d\n%s", code, out)
	}
}

// replay writes sparse files: a 1 GiB device holding 64 KiB of data takes about 64 KiB.
func TestReplayIsSparse(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "big.pclog")
	r, err := record.Create(logPath, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: 1 << 30, SectorSize: 512}}}, []record.Store{record.NewMemStore(1 << 30)})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xAB}, 64<<10)
	if err := r.Device(0).WriteAt(data, 512<<20, true); err != nil {
		t.Fatal(err)
	}
	r.Close()
	img := filepath.Join(dir, "crash.img")
	if code, out := runCLI(t, "replay", "--log", logPath, "--state", "reorder:0", "--out", img); code != ExitOK {
		t.Fatalf("replay: exit %d\n%s", code, out)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	used := st.Sys().(*syscall.Stat_t).Blocks * 512
	if st.Size() != 1<<30 || used > 1<<20 {
		t.Errorf("crash image: %d bytes, %d bytes on disk; want 1 GiB taking at most 1 MiB", st.Size(), used)
	}
	got := make([]byte, len(data))
	f, _ := os.Open(img)
	defer f.Close()
	if _, err := f.ReadAt(got, 512<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the written data is not where it belongs: %v", err)
	}
}

// --sector-size: a log with 512-byte operations is refused at 4096 (a usage error naming the
// op); a state ID found with --sector-size replays with it, as its replay line says.
func TestSectorSizeFlag(t *testing.T) {
	dir := t.TempDir()
	pcl := filepath.Join(dir, "d.pclog")
	if code, out := runCLI(t, "demo", "--keep-log", pcl); code != ExitOK {
		t.Fatalf("demo: %d\n%s", code, out)
	}
	code, out := runCLI(t, "explore", "--log", pcl, "--model", "torn", "--sector-size", "4096")
	if code != ExitError || !strings.Contains(out, "--sector-size") || !strings.Contains(out, "not aligned") {
		t.Errorf("explore --sector-size 4096 on 512-byte writes: exit %d\n%s", code, out)
	}
	big := filepath.Join(dir, "big.pclog")
	r, err := record.Create(big, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: 1 << 20, SectorSize: 512}}}, []record.Store{record.NewMemStore(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	r.Device(0).WriteAt(bytes.Repeat([]byte{1}, 16384), 0, false)
	r.Mark("m")
	r.Close()
	res := filepath.Join(dir, "r.jsonl")
	if code, out := runCLI(t, "explore", "--log", big, "--model", "torn", "--strategy", "exhaustive", "--sector-size", "4096", "--out", res); code != ExitOK {
		t.Fatalf("explore: %d\n%s", code, out)
	}
	rr, err := readResults(res)
	if err != nil {
		t.Fatal(err)
	}
	torn := 0
	defer func() {
		if torn == 0 {
			t.Errorf("no torn state among %d states", len(rr.Checked))
		}
	}()
	for _, c := range rr.Checked {
		if !strings.Contains(c.StateID, ":t") {
			continue
		}
		torn++
		img := filepath.Join(dir, "x.img")
		if code, out := runCLI(t, "replay", "--log", big, "--sector-size", "4096", "--state", c.StateID, "--out", img); code != ExitOK {
			t.Fatalf("replay %s: %d\n%s", c.StateID, code, out)
		}
		b, _ := os.ReadFile(img)
		for s := 0; s < 16384; s += 4096 {
			if !bytes.Equal(b[s:s+4096], bytes.Repeat([]byte{b[s]}, 4096)) {
				t.Errorf("state %s tears inside the 4 KiB sector at %d", c.StateID, s)
			}
		}
	}
}
