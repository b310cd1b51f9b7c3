package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// run runs the CLI in-process.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// smallLog records a little history: two epochs of writes with a flush and marks, on a base.
func smallLog(t *testing.T) (logPath, basePath string) {
	t.Helper()
	dir := t.TempDir()
	basePath = filepath.Join(dir, "base.img")
	base := bytes.Repeat([]byte{0xBB}, 64<<10)
	if err := os.WriteFile(basePath, base, 0o644); err != nil {
		t.Fatal(err)
	}
	_, hash, err := pclog.HashBase(bytes.NewReader(base))
	if err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(dir, "small.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: 64 << 10, SectorSize: 512}},
		Bases: []pclog.BaseRef{{Device: 0, Size: int64(len(base)), Hash: hash, Path: basePath}}, Source: "test"}
	r, err := record.Create(logPath, h, []record.Store{record.NewCOWStore(bytes.NewReader(base), int64(len(base)))})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Device(0)
	steps := []error{
		d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false),
		d.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192, false),
		d.Flush(),
		r.Mark("one"),
		d.WriteAt(bytes.Repeat([]byte{3}, 1024), 0, false),
		d.WriteZeroes(16384, 4096, false),
		d.Discard(32768, 4096),
		d.WriteAt(bytes.Repeat([]byte{4}, 512), 8192, true),
		r.Mark("two"),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return logPath, basePath
}

func TestLogInfo(t *testing.T) {
	logPath, _ := smallLog(t)
	code, out, errs := run(t, "log", "info", "--json", logPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var in LogInfo
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"WRITE": 4, "FLUSH": 1, "MARK": 2, "WRITE_ZEROES": 1, "DISCARD": 1}
	for k, v := range want {
		if in.ByKind[k] != v {
			t.Errorf("%s: got %d want %d (%v)", k, in.ByKind[k], v, in.ByKind)
		}
	}
	if in.FUA != 1 || in.WriteBytes != 4096+4096+1024+512 || in.ZeroBytes != 4096 || in.Discarded != 4096 || in.FlushEpochs != 2 {
		t.Errorf("summary wrong: %+v", in)
	}
	if len(in.Marks) != 2 || in.Marks[0].Name != "one" || in.Marks[1].Index != 8 {
		t.Errorf("marks wrong: %+v", in.Marks)
	}
	code, out, _ = run(t, "log", "dump", logPath)
	if code != 0 || !strings.Contains(out, "WRITE FUA [8192,+512)") || !strings.Contains(out, `MARK "two"`) {
		t.Errorf("dump: exit %d\n%s", code, out)
	}
}

func TestExploreCheckAndReplay(t *testing.T) {
	logPath, basePath := smallLog(t)
	// Without --base the tool refuses: the log names a base.
	if code, _, errs := run(t, "explore", "--log", logPath, "--model", "flush"); code != 2 || !strings.Contains(errs, "--base") {
		t.Fatalf("missing base: exit %d %s", code, errs)
	}
	// A check that passes everywhere.
	code, out, errs := run(t, "explore", "--log", logPath, "--base", basePath, "--model", "reorder", "--check", `test -f "$POWERCUT_IMAGE"`)
	if code != 0 {
		t.Fatalf("passing check: exit %d\n%s\n%s", code, out, errs)
	}
	// A check that fails when sector 0 still holds the base: violations with replay commands.
	check := `[ "$(od -An -tx1 -N1 "$POWERCUT_IMAGE" | tr -d ' ')" != bb ]`
	code, out, errs = run(t, "explore", "--log", logPath, "--base", basePath, "--model", "reorder", "--strategy", "exhaustive", "--check", check, "--jobs", "2")
	if code != 1 {
		t.Fatalf("failing check: exit %d\n%s\n%s", code, out, errs)
	}
	m := regexp.MustCompile(`rebuild: powercut replay --log \S+ --base \S+ --state (\S+) --out crash.img`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no replay command in output:\n%s", out)
	}
	img := filepath.Join(t.TempDir(), "crash.img")
	if code, _, errs := run(t, "replay", "--log", logPath, "--base", basePath, "--state", m[1], "--out", img); code != 0 {
		t.Fatalf("replay: exit %d %s", code, errs)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0xBB || len(b) != 64<<10 {
		t.Fatalf("replayed state %s: first byte %#x, size %d; the check said it still held the base", m[1], b[0], len(b))
	}
	// The same run twice gives the same violations in the same order, whatever --jobs.
	_, out1, _ := run(t, "explore", "--log", logPath, "--base", basePath, "--model", "reorder", "--strategy", "exhaustive", "--check", check, "--jobs", "1", "--json")
	_, out2, _ := run(t, "explore", "--log", logPath, "--base", basePath, "--model", "reorder", "--strategy", "exhaustive", "--check", check, "--jobs", "2", "--json")
	var r1, r2 exploreResult
	if json.Unmarshal([]byte(out1), &r1) != nil || json.Unmarshal([]byte(out2), &r2) != nil {
		t.Fatalf("bad json:\n%s", out1)
	}
	if len(r1.Violations) == 0 || len(r1.Violations) != len(r2.Violations) {
		t.Fatalf("violations differ: %d vs %d", len(r1.Violations), len(r2.Violations))
	}
	for i := range r1.Violations {
		if r1.Violations[i].StateID != r2.Violations[i].StateID {
			t.Fatalf("order differs at %d: %s vs %s", i, r1.Violations[i].StateID, r2.Violations[i].StateID)
		}
	}
	// Replay to a mark: the prefix including mark "one" holds both first writes.
	if code, _, errs := run(t, "replay", "--log", logPath, "--base", basePath, "--to-mark", "one", "--out", img); code != 0 {
		t.Fatalf("replay --to-mark: exit %d %s", code, errs)
	}
	b, _ = os.ReadFile(img)
	if b[0] != 1 || b[8192] != 2 || b[16384] != 0xBB {
		t.Fatalf("prefix to mark one wrong: %x %x %x", b[0], b[8192], b[16384])
	}
}

func TestExploreUsageErrors(t *testing.T) {
	logPath, basePath := smallLog(t)
	for _, args := range [][]string{
		{"explore"},
		{"explore", "--log", logPath, "--base", basePath, "--model", "nonsense"},
		{"explore", "--log", logPath, "--base", basePath, "--strategy", "all"},
		{"explore", "--log", logPath, "--base", basePath, "--jobs", "0"},
		{"explore", "--log", logPath, "--base", basePath, "--fsck", "zfs"},
		{"explore", "--log", logPath, "--base", basePath, "--no-such-flag"},
		{"replay", "--log", logPath, "--base", basePath, "--state", "reorder:999", "--out", filepath.Join(t.TempDir(), "x")},
		{"replay", "--log", logPath, "--base", basePath, "--state", "bogus", "--out", filepath.Join(t.TempDir(), "x")},
		{"explore", "--log", filepath.Join(t.TempDir(), "missing.pclog")},
	} {
		code, _, errs := run(t, args...)
		if code != 2 || !strings.HasPrefix(errs, "powercut: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}
