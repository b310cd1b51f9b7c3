package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/powercut/powercut/explore"
)

func TestResolveShard(t *testing.T) {
	status := filepath.Join(t.TempDir(), "status")
	for _, c := range []struct {
		name  string
		flag  string
		count int
		env   map[string]string
		want  explore.Shard
		bad   bool
	}{
		{"flag", "2/5", 0, nil, explore.Shard{Index: 2, Count: 5}, false},
		{"flag beats env", "0/2", 0, map[string]string{"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}, explore.Shard{Index: 0, Count: 2}, false},
		{"bad flag", "5/5", 0, nil, explore.Shard{}, true},
		{"kubernetes", "", 4, map[string]string{"JOB_COMPLETION_INDEX": "3"}, explore.Shard{Index: 3, Count: 4}, false},
		{"kubernetes env count", "", 0, map[string]string{"JOB_COMPLETION_INDEX": "1", "POWERCUT_SHARDS": "2"}, explore.Shard{Index: 1, Count: 2}, false},
		{"kubernetes no count", "", 0, map[string]string{"JOB_COMPLETION_INDEX": "1"}, explore.Shard{}, true},
		{"slurm", "", 0, map[string]string{"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, explore.Shard{Index: 1, Count: 3}, false},
		{"slurm from 1", "", 0, map[string]string{"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, explore.Shard{Index: 2, Count: 3}, false},
		{"bazel", "", 0, map[string]string{"TEST_SHARD_INDEX": "0", "TEST_TOTAL_SHARDS": "2", "TEST_SHARD_STATUS_FILE": status}, explore.Shard{Index: 0, Count: 2}, false},
		{"gitlab is 1-based", "", 0, map[string]string{"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, explore.Shard{Index: 1, Count: 2}, false},
		{"gitlab index without total", "", 0, map[string]string{"CI_NODE_INDEX": "2"}, explore.Shard{}, true},
		{"none", "", 0, nil, explore.Shard{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := resolveShard(c.flag, c.count, func(k string) string { return c.env[k] })
			if (err != nil) != c.bad || got != c.want {
				t.Errorf("got %+v, err %v; want %+v (error %v)", got, err, c.want, c.bad)
			}
		})
	}
	if _, err := os.Stat(status); err != nil {
		t.Errorf("TEST_SHARD_STATUS_FILE not touched: %v", err)
	}
}
