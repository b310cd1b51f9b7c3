package explore

import (
	"sort"

	"github.com/powercut/powercut/pclog"
)

const pclogWrite = pclog.KindWrite

func sortRanges(rs [][2]int64) {
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
}
