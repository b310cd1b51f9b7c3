#!/bin/bash
# bench/shard.sh: parallel efficiency of sharded exploration (issue 14) on this machine.
#
# For each recording, `powercut explore --model reorder --fsck ext4` is timed
#   T1       unsharded (--jobs 1), as a user runs it on the whole machine;
#   T1pin    unsharded, bound to one core (taskset -c 0);
#   T2pin    shards 0/2 and 1/2 at once, each bound to its own core (taskset -c 0 / -c 1): what
#            a batch engine does with one core per task (Slurm --cpus-per-task=1 with task
#            affinity, a Kubernetes pod with cpu: 1 under the static CPU manager);
#   T2       shards 0/2 and 1/2 at once, unbound (the scheduler places them);
# efficiency = T1 / (2 x T2pin) (also against T1pin, and T1 / (2 x T2) for the unbound pair). Every run's results are
# merged (`powercut merge`) and compared with the unsharded run's summary (same counts), and the
# shards' checked states are counted (none may be checked by both).
#
# The recordings:
#   fixture    the real-kernel ext4-ordered fixture (../shared/fixtures, or $POWERCUT_FIXTURES),
#              imported from dm-log-writes: 444 distinct images of an almost empty file system,
#              where each e2fsck run is mostly process start-up;
#   populated  a recording made here with `powercut fs` of a workload that creates 12,000 files,
#              syncs, marks "populated" and then renames, unlinks and rewrites; explored from
#              that mark, each state's journal recovery and check read and write real metadata.
# and, as the machine's own ceiling, bare e2fsck (no powercut) run 400 times in one stream and in
# two streams bound to one core each, on the fixture's base image.
#
# Needs root, FUSE, loop devices, zstd (fixture), taskset, jq, bc. Usage: bench/shard.sh [fixture|populated|all]
set -euo pipefail
which=${1:-all}
here=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${POWERCUT_FIXTURES:-$here/../shared/fixtures}
work=$(mktemp -d /tmp/powercut-bench-shard.XXXXXX)
trap 'rm -rf "$work"' EXIT
pc=$work/powercut
(cd "$here" && go build -o "$pc" ./cmd/powercut)

secs() { # secs CMD...: wall seconds of CMD, its output discarded
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>&1 || [ $? -eq 1 ] # 1: violations found, still a finished run
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l | xargs printf '%.2f'
}

pair() { # pair BIND0 BIND1 ARGS...: shards 0/2 and 1/2 at once; BIND is a taskset prefix or ""
	local b0=$1 b1=$2
	shift 2
	rm -f "$work/s0.jsonl" "$work/s1.jsonl"
	$b0 "$pc" explore "$@" --shard 0/2 --out "$work/s0.jsonl" >/dev/null 2>&1 &
	local p0=$!
	$b1 "$pc" explore "$@" --shard 1/2 --out "$work/s1.jsonl" >/dev/null 2>&1 &
	local p1=$!
	wait $p0 || [ $? -eq 1 ]
	wait $p1 || [ $? -eq 1 ]
}

report() { # report RESULTS.jsonl...: the merged report's counts
	"$pc" merge "$@" --json 2>/dev/null | jq -c '{states, distinct_images, checked, violations: (.violations | length), groups: (.groups | length)}' || true
}

measure() { # measure NAME ARGS...
	local name=$1
	shift
	rm -f "$work/u.jsonl"
	local t1 t1pin t2pin t2
	t1=$(secs "$pc" explore "$@" --out "$work/u.jsonl")
	local want
	want=$(report "$work/u.jsonl")
	rm -f "$work/u1.jsonl"
	t1pin=$(secs taskset -c 0 "$pc" explore "$@" --out "$work/u1.jsonl")
	t2pin=$(secs pair "taskset -c 0" "taskset -c 1" "$@")
	local got twice
	got=$(report "$work/s0.jsonl" "$work/s1.jsonl")
	twice=$(cat "$work/s0.jsonl" "$work/s1.jsonl" | jq -r '.checked.state // empty' | sort | uniq -d | wc -l)
	t2=$(secs pair "" "" "$@")
	printf '%-10s T1 %6ss  T1pin %6ss  T2pin %6ss  T2 %6ss  efficiency %s (against T1pin %s; unbound %s)  merged=unsharded: %s  checked twice: %s\n' \
		"$name" "$t1" "$t1pin" "$t2pin" "$t2" \
		"$(echo "$t1 / (2 * $t2pin)" | bc -l | xargs printf '%.2f')" \
		"$(echo "$t1pin / (2 * $t2pin)" | bc -l | xargs printf '%.2f')" \
		"$(echo "$t1 / (2 * $t2)" | bc -l | xargs printf '%.2f')" \
		"$([ "$got" = "$want" ] && echo "yes $got" || echo "NO: $got vs $want")" "$twice"
}

if [ "$which" = all ] || [ "$which" = fixture ]; then
	fx=$fixtures/ext4-ordered
	zstd -qdf "$fx/base.img.zst" -o "$work/base.img"
	zstd -qdf "$fx/log.bin.zst" -o "$work/log.bin"
	"$pc" import dm-log-writes --dm-log "$work/log.bin" --log "$work/fx.pclog" --base "$work/base.img" >/dev/null
	measure fixture --log "$work/fx.pclog" --base "$work/base.img" --model reorder --fsck ext4

	# the ceiling: bare e2fsck, the same two runs per state, 200 states in one stream vs 2 x 100
	cp "$work/base.img" "$work/b0.img"
	cp "$work/base.img" "$work/b1.img"
	stream() { for _ in $(seq "$2"); do e2fsck -E journal_only -y "$1" >/dev/null 2>&1; e2fsck -fn "$1" >/dev/null 2>&1; done; }
	export -f stream
	s1=$(secs taskset -c 0 bash -c "stream $work/b0.img 200")
	s2=$(secs bash -c "taskset -c 0 bash -c 'stream $work/b0.img 100' & taskset -c 1 bash -c 'stream $work/b1.img 100' & wait")
	printf '%-10s one stream %ss, two streams (one core each) %ss: efficiency %s\n' "bare e2fsck" "$s1" "$s2" \
		"$(echo "$s1 / (2 * $s2)" | bc -l | xargs printf '%.2f')"
fi

if [ "$which" = all ] || [ "$which" = populated ]; then
	cat >"$work/populate.sh" <<'EOF'
#!/bin/sh
set -e
cd "$POWERCUT_MNT"
for d in $(seq 60); do mkdir d$d; for f in $(seq 200); do echo "$d $f" > d$d/f$f; done; done
sync
powercut mark populated
for i in $(seq 8); do echo "new $i" > d$i/new; sync; mv d$i/f1 d$i/g1; rm d$i/f2; done
sync
EOF
	chmod +x "$work/populate.sh"
	PATH=$work:$PATH "$pc" fs --fs ext4 --size 256M --workload "$work/populate.sh" --check true \
		--model prefix --from-mark populated --keep "$work/pop" >/dev/null
	measure populated --log "$work/pop/fs.pclog" --base "$work/pop/base.img" --model reorder --fsck ext4 --from-mark populated
fi
