package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
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
	dir := t.TempDir()
	for _, c := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"explore", "--modle", "x"}, "Run 'powercut explore --help'", ""},
		{[]string{"explore", "--model", "bogus", "--log", "x"}, "--model: unknown model", ""},
		{[]string{"replay", "extra"}, "Run 'powercut replay --help'", ""},
		{[]string{"record", "nbdd"}, "unknown frontend \"nbdd\"", ""},
		{[]string{"explroe"}, "Run 'powercut --help'", ""},
		{[]string{"report"}, "Run 'powercut report --help'", ""},
		// One flag named: the one that was wrong.
		{[]string{"replay", "--log", "x", "--state", "s"}, "--out is required", "--log"},
		{[]string{"replay", "--log", "x", "--out", "y", "--state", "s", "--to-mark", "m"}, "--state and --to-mark cannot be used together", ""},
		{[]string{"replay", "--log", "x", "--out", "y", "--state", "s", "--sector-size", "1024"}, "--sector-size 1024: want 512 or 4096", ""},
		{[]string{"repro", "--log", "x", "--out", "y"}, "--state is required", "--log"},
		{[]string{"explore", "--log", "x", "--jobs", "0"}, "--jobs 0: must be at least 1", "--k"},
		{[]string{"explore", "--log", "x", "--states", "-1"}, "--states -1: must be at least 0", "--jobs"},
		{[]string{"explore", "--log", "x", "--check", "true", "--fsck", "ext4"}, "--check and --fsck cannot be used together", "--verify"},
		{[]string{"explore", "--log", "x", "--sector-size", "1000"}, "--sector-size 1000: want 512 or 4096", ""},
		{[]string{"record", "fuse", "--mount", dir}, "--log is required", "--mount"},
		{[]string{"record", "nbd", "--log", filepath.Join(dir, "n.pclog"), "--size", "1M", "--sector-size", "1024"}, "--sector-size 1024: want 512 or 4096", ""},
		{[]string{"demo", "--writes", "0"}, "--writes 0: must be at least 1", "--blocks"},
		{[]string{"verify", "--target", filepath.Join(dir, "t"), "--size", "1M", "--iodepth", "0"}, "--iodepth 0: must be at least 1", "--max-failures"},
	} {
		code, out := runCLI(t, c.args...)
		if code != ExitError || !strings.Contains(out, c.want) || (c.not != "" && strings.Contains(out, c.not)) {
			t.Errorf("%v: exit %d, want 2 and %q (not %q):\n%s", c.args, code, c.want, c.not, out)
		}
	}
}

// cobra's own help and completion commands work (they are added before the command line is
// looked up, so they are not unknown commands).
func TestHelpAndCompletionCommands(t *testing.T) {
	for _, args := range [][]string{{"help", "replay"}, {"completion", "bash"}, {"__complete", "expl"}} {
		code, stdout, stderr := runDM(args...)
		if code != ExitOK || stdout == "" {
			t.Errorf("%v: exit %d\nstdout: %.200s\nstderr: %s", args, code, stdout, stderr)
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

// The old spellings of renamed flags still work, with a warning on stderr (stdout stays clean
// for --json readers): import's dm-log-writes input was --log and its pclog --out (now --dm-log
// and --log, since --log names a .pclog everywhere), export's recording was --in.
func TestRenamedFlagsStillWork(t *testing.T) {
	dir := t.TempDir()
	pcl := filepath.Join(dir, "d.pclog")
	if code, out := runCLI(t, "demo", "--keep-log", pcl); code != ExitOK {
		t.Fatalf("demo: %d\n%s", code, out)
	}
	dm := filepath.Join(dir, "d.dmlw")
	code, stdout, stderr := runDM("export", "dm-log-writes", "--in", pcl, "--out", dm)
	if code != ExitOK || !strings.Contains(stderr, "--in has been deprecated") || strings.Contains(stdout, "deprecated") {
		t.Fatalf("export --in: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	back := filepath.Join(dir, "back.pclog")
	code, stdout, stderr = runDM("import", "dm-log-writes", "--log", dm, "--out", back)
	if code != ExitOK || !strings.Contains(stderr, "deprecated, use --dm-log") || strings.Contains(stdout, "deprecated") {
		t.Fatalf("import --log DM --out F.pclog: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if l, err := pclog.Open(back); err != nil {
		t.Fatalf("the old spelling did not write the pclog: %v", err)
	} else {
		l.Close()
	}
	// The new spelling: --dm-log in, --log out, no warning.
	again := filepath.Join(dir, "again.pclog")
	code, stdout, stderr = runDM("import", "dm-log-writes", "--dm-log", dm, "--log", again)
	if code != ExitOK || strings.Contains(stdout+stderr, "deprecated") {
		t.Fatalf("import --dm-log DM --log F.pclog: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, err := os.Stat(again); err != nil {
		t.Fatal(err)
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

// The CLI's commands come from one explicit list: no file of the package registers anything
// from an init function, and no command name is listed twice.
func TestOneExplicitCommandList(t *testing.T) {
	fset := token.NewFileSet()
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "init" {
				t.Errorf("%s: func init (list the command in commands, root.go)", fset.Position(fn.Pos()))
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range commands(&Env{Ctx: context.Background(), Stdout: io.Discard, Stderr: io.Discard}) {
		if seen[c.Name()] {
			t.Errorf("command %q listed twice", c.Name())
		}
		seen[c.Name()] = true
	}
	for _, want := range []string{"demo", "explore", "fs", "record", "replay", "verify"} {
		if !seen[want] {
			t.Errorf("command %q missing from the list", want)
		}
	}
}

// --resume after a run killed mid-line: the torn last line is cut, the journal goes on whole.
func TestResumeCutsATornLine(t *testing.T) {
	dir := t.TempDir()
	logPath, res := filepath.Join(dir, "demo.pclog"), filepath.Join(dir, "r.jsonl")
	if code, out := runCLI(t, "demo", "--bug", "P5", "--keep-log", logPath, "--out", res); code != ExitViolations {
		t.Fatalf("demo: %d\n%s", code, out)
	}
	b, _ := os.ReadFile(res)
	lines := strings.SplitAfter(string(b), "\n")
	cut := strings.Join(lines[:len(lines)/2], "") + `{"checked":{"seq":` // killed mid-line
	if err := os.WriteFile(res, []byte(cut), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, "demo", "--bug", "P5", "--keep-log", filepath.Join(dir, "again.pclog"), "--resume", res); code != ExitViolations {
		t.Fatalf("resume: %d\n%s", code, out)
	}
	r, err := readResults(res)
	if err != nil || r.Torn || r.Summary == nil {
		t.Fatalf("after resume: %v, torn %v, summary %v", err, r != nil && r.Torn, r != nil && r.Summary != nil)
	}
	b, _ = os.ReadFile(res)
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("line %d is not JSON: %q", i+1, l)
		}
	}
}
