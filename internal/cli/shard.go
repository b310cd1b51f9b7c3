package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/powercut/powercut/explore"
)

// resolveShard returns the shard of this run: --shard i/N when given, else the batch engine's
// environment (Kubernetes Indexed Job, Slurm job array, Bazel/gtest sharding, GitLab parallel
// jobs), else unsharded. count is --shard-count (for a Kubernetes Indexed Job, whose environment
// carries the index only; POWERCUT_SHARDS works too). It returns where the shard came from.
func resolveShard(flag string, count int, getenv func(string) string) (explore.Shard, string, error) {
	if flag != "" {
		a, b, ok := strings.Cut(flag, "/")
		i, err1 := strconv.Atoi(a)
		n, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
			return explore.Shard{}, "", usagef("--shard %q: want INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4)", flag)
		}
		return explore.Shard{Index: i, Count: n}, "--shard", nil
	}
	num := func(name string) (int, bool, error) {
		v := getenv(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, true, usagef("environment %s=%q: not a number", name, v)
		}
		return n, true, nil
	}
	pick := func(idxVar, cntVar string, base int) (explore.Shard, string, bool, error) {
		i, ok, err := num(idxVar)
		if err != nil || !ok {
			return explore.Shard{}, "", false, err
		}
		n, ok, err := num(cntVar)
		if err != nil {
			return explore.Shard{}, "", true, err
		}
		if !ok {
			return explore.Shard{}, "", true, usagef("environment %s is set but %s is not: the shard count is unknown", idxVar, cntVar)
		}
		sh := explore.Shard{Index: i - base, Count: n}
		if n < 1 || sh.Index < 0 || sh.Index >= n {
			return explore.Shard{}, "", true, usagef("environment %s=%d, %s=%d: not a shard", idxVar, i, cntVar, n)
		}
		return sh, idxVar, true, nil
	}
	// Kubernetes Indexed Job: the index is in the environment, the count is given to us.
	if sh, ok, err := kubernetesShard(count, num); err != nil || ok {
		return sh, "JOB_COMPLETION_INDEX", err
	}
	slurmMin := 0
	if v, ok, err := num("SLURM_ARRAY_TASK_MIN"); err != nil {
		return explore.Shard{}, "", err
	} else if ok {
		slurmMin = v
	}
	for _, c := range []struct {
		idx, cnt string
		base     int
	}{
		{"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", slurmMin},
		{"TEST_SHARD_INDEX", "TEST_TOTAL_SHARDS", 0},
		{"CI_NODE_INDEX", "CI_NODE_TOTAL", 1},
	} {
		sh, from, found, err := pick(c.idx, c.cnt, c.base)
		if err != nil {
			return explore.Shard{}, "", err
		}
		if found {
			if c.idx == "TEST_SHARD_INDEX" {
				// Bazel and gtest: touching the status file says this runner understands sharding.
				if p := getenv("TEST_SHARD_STATUS_FILE"); p != "" {
					if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
						f.Close()
					}
				}
			}
			return sh, from, nil
		}
	}
	if count > 1 {
		return explore.Shard{}, "", usagef("--shard-count %d without an index: give --shard INDEX/COUNT or run under a batch engine that sets one", count)
	}
	return explore.Shard{}, "", nil
}

// shardNote describes the shard for a summary line.
func shardNote(sh explore.Shard, from string) string {
	if sh.Count <= 1 {
		return ""
	}
	return fmt.Sprintf("shard %d/%d (from %s)", sh.Index, sh.Count, from)
}

// kubernetesShard reads an Indexed Job's JOB_COMPLETION_INDEX; the count comes from --shard-count
// or POWERCUT_SHARDS (the Job's completions).
func kubernetesShard(count int, num func(string) (int, bool, error)) (explore.Shard, bool, error) {
	i, ok, err := num("JOB_COMPLETION_INDEX")
	if err != nil || !ok {
		return explore.Shard{}, false, err
	}
	n := count
	if n == 0 {
		v, ok, err := num("POWERCUT_SHARDS")
		if err != nil {
			return explore.Shard{}, true, err
		}
		if ok {
			n = v
		}
	}
	if n < 1 || i < 0 || i >= n {
		return explore.Shard{}, true, usagef("JOB_COMPLETION_INDEX=%d needs the shard count: --shard-count N or POWERCUT_SHARDS=N (the Job's completions)", i)
	}
	return explore.Shard{Index: i, Count: n}, true, nil
}
