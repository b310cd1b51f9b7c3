#!/bin/bash
# bench/fsgen.sh: rate of `powercut fs --generate` (generated workloads recorded, explored and
# checked with the built-in oracle, per second of wall time) and the per-workload breakdown
# (record, generate states, mount, compare, fsck; summed over the parallel jobs, so their sum
# exceeds wall time / workloads when --jobs > 1). Issue 11's target for seq-1 on ext4 with the
# flush model on a 2-core machine: >= 1.8 workloads/s (4x CrashMonkey's published ~0.45/s).
#
# Needs root, FUSE, loop devices, jq. Usage:
#   [POWERCUT_BIN=powercut] bench/fsgen.sh [FS] [SEQ] [JOBS] [extra powercut fs flags...]
# e.g. bench/fsgen.sh ext4 seq-1 4;  bench/fsgen.sh btrfs seq-1 4 --limit 100 --seed 1
set -euo pipefail
fs=${1:-ext4}
seq=${2:-seq-1}
jobs=${3:-4}
shift $(($# < 3 ? $# : 3))
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/powercut-bench-fsgen.XXXXXX)
trap 'rm -rf "$work"' EXIT
pc=${POWERCUT_BIN:-$work/powercut}
[ -n "${POWERCUT_BIN:-}" ] || (cd "$here" && go build -o "$pc" ./cmd/powercut)
echo "fs=$fs $seq jobs=$jobs cores=$(nproc) kernel=$(uname -r) load: $(cut -d' ' -f1-3 /proc/loadavg)"
rc=0
"$pc" fs --fs "$fs" --generate "$seq" --jobs "$jobs" --out "$work/out" --json "$@" >"$work/r.json" 2>"$work/err" || rc=$?
[ "$rc" -le 1 ] || { cat "$work/err" >&2; exit "$rc"; }
jq -r '
  def s(x): (x / 1e9 / ([.ran + .failed, 1] | max) * 1000 | floor) / 1000;
  "workloads: \(.selected) selected, \(.dropped // [] | length) dropped (tmpfs), \(.failed) failed, \(.ran) ran",
  "states generated \(.states), checked \(.checked); violations \(.violations) \(.violations_by_class // {} | tostring)",
  "wall \(.wall_seconds | . * 10 | floor / 10)s: \(.workloads_per_second | . * 100 | floor / 100) workloads/s",
  "per workload (s): record \(s(.times.record_ns)), generate states \(s(.times.generate_states_ns)), mount \(s(.times.mount_ns)), compare \(s(.times.compare_ns)), fsck \(s(.times.fsck_ns))"
' "$work/r.json"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
