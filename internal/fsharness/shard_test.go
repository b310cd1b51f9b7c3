package fsharness

import (
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/internal/fsgen"
)

// A campaign's shards split its workloads: every workload in exactly one shard, whatever the
// count, each shard's share in selection order.
func TestShardWorkloadsPartition(t *testing.T) {
	ws, err := fsgen.Generate(1, fsgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 7} {
		seen := map[string]int{}
		for i := 0; i < n; i++ {
			share := shardWorkloads(ws, explore.Shard{Index: i, Count: n})
			for k, w := range share {
				seen[w.ID()]++
				if k > 0 && share[k-1] == w {
					t.Fatalf("%d/%d: %s twice", i, n, w.ID())
				}
			}
			if lo, hi := len(ws)/n, (len(ws)+n-1)/n; len(share) < lo || len(share) > hi {
				t.Errorf("shard %d/%d: %d of %d workloads, want %d..%d", i, n, len(share), len(ws), lo, hi)
			}
		}
		if len(seen) != len(ws) {
			t.Errorf("%d shards ran %d distinct workloads of %d", n, len(seen), len(ws))
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("%d shards: %s ran %d times", n, id, c)
			}
		}
	}
}
