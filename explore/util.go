package explore

import (
	"bytes"
	"io"
	"sort"
	"sync"

	"github.com/powercut/powercut/model"

	"github.com/powercut/powercut/pclog"
)

const pclogWrite = pclog.KindWrite

func sortRanges(rs [][2]int64) {
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
}

// baseZero tells the model which base ranges read as zeros (a device without a base image is
// all zeros), so a discard whose kept content would be zeros is not a choice. Answers are cached:
// the walk asks again for a discard at every crash point until it settles.
func baseZero(src *Source) func(dev uint16, off, n int64) bool {
	var mu sync.Mutex
	cache := map[[3]int64]bool{}
	buf, zeros := make([]byte, 1<<20), make([]byte, 1<<20)
	return func(dev uint16, off, n int64) bool {
		base := src.Bases[dev]
		if base == nil {
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		k := [3]int64{int64(dev), off, n}
		if z, ok := cache[k]; ok {
			return z
		}
		z := true
		for done := int64(0); done < n && z; {
			b := buf[:min(int64(len(buf)), n-done)]
			m, err := base.ReadAt(b, off+done)
			if err != nil && err != io.EOF {
				z = false // unreadable: never assume zeros
				break
			}
			z = bytes.Equal(b[:m], zeros[:m])
			if m < len(b) {
				break // past the end of a short base: zeros, as the image reads it
			}
			done += int64(m)
		}
		cache[k] = z
		return z
	}
}

// history builds the model's history of a source, telling it where the bases read as zeros.
func history(src *Source) (*model.History, error) {
	h, err := model.FromLog(src.Log)
	if err != nil {
		return nil, err
	}
	h.BaseZero = baseZero(src)
	if len(src.Devices) > 0 {
		keep := map[uint16]bool{}
		for _, d := range src.Devices {
			keep[d] = true
		}
		for i := range h.Ops {
			if o := &h.Ops[i]; !keep[o.Dev] && o.Kind != pclog.KindMark {
				// Kind 0 is no kind: neither data, flush nor mark, so the model ignores it.
				o.Kind, o.Flags = 0, 0
			}
		}
	}
	if src.SectorSize != 0 {
		if err := h.SetSectorSize(src.SectorSize); err != nil {
			return nil, err
		}
	}
	return h, nil
}
