package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/explain"
)

// explainGroups fills each minimal state's Where: what the blocks of each deviating operation
// hold, read on the image where every operation submitted before the crash point landed (the
// deviating ones included), so a dropped write is named by what it would have written.
func explainGroups(ctx context.Context, warn io.Writer, fs string, src explore.Source, rep *explore.Report) {
	for gi := range rep.Groups {
		m := rep.Groups[gi].Minimal
		if m == nil || len(m.Deviations) == 0 {
			continue
		}
		parts := strings.SplitN(m.StateID, ":", 3)
		imgs, _, err := explore.Materialize(src, parts[0]+":"+parts[1])
		if err != nil || imgs[0] == nil {
			fmt.Fprintf(warn, "powercut: explain %s: %v\n", m.StateID, err)
			continue
		}
		tmp, err := os.CreateTemp("", "powercut-explain-*.img")
		if err != nil {
			fmt.Fprintf(warn, "powercut: explain: %v\n", err)
			return
		}
		path := tmp.Name()
		tmp.Close()
		if err := writeImage(path, imgs[0]); err != nil {
			os.Remove(path)
			fmt.Fprintf(warn, "powercut: explain: %v\n", err)
			continue
		}
		for _, d := range m.Deviations {
			e := src.Log.Entries[d.Op]
			what, err := explain.Where(ctx, fs, path, e.Offset, max(e.Length, 1))
			if err != nil {
				what = "unknown (" + err.Error() + ")"
			}
			m.Where = append(m.Where, fmt.Sprintf("op %d: %s", d.Op, what))
		}
		os.Remove(path)
	}
}
