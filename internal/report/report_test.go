package report

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/demo"
	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// demoReport runs the demo with planted bug P1 (found under coalesce) and renders its report.
func demoReport(t *testing.T) (string, *explore.Report, *pclog.Log) {
	t.Helper()
	c := demo.DefaultConfig()
	c.Profile, c.Bug = extent.ProfileCrucible, extent.BugP1
	o, err := demo.Run(context.Background(), demo.RunOptions{Config: c, Model: model.Coalesce, Jobs: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Cleanup(false) })
	l, err := pclog.Open(o.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var buf bytes.Buffer
	err = WriteHTML(&buf, Input{Title: "demo crucible P1 coalesce", Log: l, LogPath: o.LogPath, Report: o.Report,
		Replay: func(id string) string {
			return "powercut replay --log " + o.LogPath + " --state " + id + " --out crash.img"
		}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, o.Report, l
}

// chromium runs headless Chromium on a local file with the given extra arguments (as the machine
// notes say: no network features, a fresh profile).
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	testenv.RequireTool(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, "chromium", append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.Bytes()
}

// The report renders in a real browser: the DOM after its script ran holds the summary, one
// block per group with the minimal state, a timeline with every operation and the selected
// group's deviating operations and crash point; a screenshot is taken.
func TestReportInChromium(t *testing.T) {
	path, rep, l := demoReport(t)
	if len(rep.Groups) == 0 {
		t.Fatal("the demo run found no violation group")
	}
	dom := string(chromium(t, "--virtual-time-budget=5000", "--dump-dom", "file://"+path))
	mustHave := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("rendered DOM lacks %s", re)
		}
		return m
	}
	if got := mustHave(`data-rendered="(\d+)"`)[1]; got != fmt.Sprint(len(l.Entries)) {
		t.Errorf("timeline drew %s operations, the log has %d", got, len(l.Entries))
	}
	mustHave(fmt.Sprintf(`id="s-states">%d<`, rep.States))
	mustHave(fmt.Sprintf(`id="s-groups">%d<`, len(rep.Groups)))
	if n := strings.Count(dom, `class="group`); n != len(rep.Groups) {
		t.Errorf("%d group blocks, want %d", n, len(rep.Groups))
	}
	mustHave(`class="group selected"`)
	mustHave(`id="crash-point"`)
	if n := strings.Count(dom, `class="deviating"`); n != len(rep.Groups[0].Minimal.Deviations)+countPairs(rep.Groups[0].Minimal) {
		t.Errorf("%d deviating operations outlined, the first group's minimal state has %d", n, len(rep.Groups[0].Minimal.Deviations))
	}
	mustHave(regexp.QuoteMeta(rep.Groups[0].Minimal.StateID))
	mustHave(`did not land`)
	if strings.Contains(dom, "http://") && !strings.Contains(dom, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("the report references the network")
	}
	shot := filepath.Join(t.TempDir(), "report.png")
	chromium(t, "--virtual-time-budget=5000", "--window-size=1400,1600", "--screenshot="+shot, "file://"+path)
	st, err := os.Stat(shot)
	if err != nil || st.Size() < 10000 {
		t.Fatalf("screenshot %s: %v (%v bytes)", shot, err, st)
	}
	if keep := os.Getenv("POWERCUT_KEEP_SCREENSHOT"); keep != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(keep, b, 0o644)
		h, _ := os.ReadFile(path)
		os.WriteFile(strings.TrimSuffix(keep, ".png")+".html", h, 0o644)
	}
}

func countPairs(m *explore.Minimal) int {
	n := 0
	for _, d := range m.Deviations {
		if d.Kind == "flipped" || d.Kind == "carried" {
			n++
		}
	}
	return n
}

// A 10,000-operation recording gives a report of at most 2 MB, with no external reference.
func TestReportSize10000Ops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.pclog")
	const size = 64 << 20
	r, err := record.Create(path, pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "d", Size: size, SectorSize: 512}}}, []record.Store{record.NewMemStore(size)})
	if err != nil {
		t.Fatal(err)
	}
	dev := r.Device(0)
	buf := make([]byte, 4096)
	for i := 0; i < 10000; i++ {
		switch {
		case i%50 == 49:
			err = dev.Flush()
		case i%500 == 499:
			err = r.Mark(fmt.Sprintf("m%d", i))
		default:
			err = dev.WriteAt(buf, int64(i*7919%(size/4096))*4096, i%10 == 0)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	l, err := pclog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep := &explore.Report{Model: "reorder", Strategy: "drop-k", Violations: []explore.Found{{StateID: "reorder:3:d5", Violation: explore.Violation{Oracle: "x", Detail: "block 5 lost"}}},
		Groups: []explore.Group{{Oracle: "x", Class: "block # lost", Violations: 1, States: 1, First: explore.Found{StateID: "reorder:3:d5"},
			Minimal: &explore.Minimal{StateID: "reorder:3:d5", Deviations: []explore.Deviation{{Kind: "dropped", Op: 5}}, CrashSeq: 40}}}}
	var out bytes.Buffer
	if err := WriteHTML(&out, Input{Title: "big", Log: l, Report: rep}); err != nil {
		t.Fatal(err)
	}
	t.Logf("10,000 operations: %d bytes", out.Len())
	if out.Len() > 2<<20 {
		t.Errorf("report of a 10,000-operation log is %d bytes, want at most 2 MB", out.Len())
	}
	if regexp.MustCompile(`<script[^>]+src=|<link[^>]+href=|https?://[^"]*\.(js|css)`).Match(out.Bytes()) {
		t.Errorf("the report loads something from outside itself")
	}
}
