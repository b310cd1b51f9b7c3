package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadResults: a damaged or hostile results file gives an error or a result, never a panic,
// and a torn last line is reported as torn, not parsed.
func FuzzReadResults(f *testing.F) {
	f.Add([]byte(`{"powercut_results":1,"run":{"log":"x","model":"reorder"}}` + "\n" + `{"checked":{"seq":0,"state":"reorder:0"}}` + "\n"))
	f.Add([]byte(`{"powercut_results":1,"run":{"log":"x","model":"reorder"}}` + "\n" + `{"summary":{"model":"reorder","violations":[]}}` + "\n" + `{"chec`))
	f.Add([]byte("not json\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "r.jsonl")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := readResults(p)
		if err != nil {
			return
		}
		if r.Run.Model == "" {
			t.Fatalf("accepted a results file without a run: %q", data)
		}
		if len(data) > 0 && data[len(data)-1] != '\n' && !r.Torn {
			t.Fatalf("a file ending mid-line is not reported torn: %q", data)
		}
	})
}
