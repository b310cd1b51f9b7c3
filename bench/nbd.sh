#!/usr/bin/env bash
# NBD recorder benchmark (issue 4): fio's nbd engine (libnbd), 4k randwrite, iodepth 16, 20 s,
# against `powercut record nbd` (memory backing, recording to a file), the same server with
# --no-record, and `nbdkit memory`, in one run on one machine. Servers run one at a time, in
# rounds, so background load hits every configuration alike.
#
# Usage: bench/nbd.sh [ROUNDS]   (env: RUNTIME=20 SIZE=1G IODEPTH=16 WORKDIR=/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
RUNTIME=${RUNTIME:-20}
SIZE=${SIZE:-1G}
IODEPTH=${IODEPTH:-16}
for t in fio nbdkit go; do
	command -v "$t" >/dev/null || { echo "bench/nbd.sh: $t not installed" >&2; exit 2; }
done
work=$(mktemp -d "${WORKDIR:-/tmp}/powercut-bench-nbd.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do [ -n "$p" ] || continue; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
go build -o "$work/powercut" ./cmd/powercut

# fio_iops URI: one fio run, prints the write IOPS.
fio_iops() {
	fio --name=randwrite --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth="$IODEPTH" \
		--runtime="$RUNTIME" --time_based --size="$SIZE" --output-format=json \
		| python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; assert j["error"]==0, j; print(int(j["write"]["iops"]))'
}

run_powercut() { # run_powercut PORT ARGS...: serve, measure, stop
	local port=$1; shift
	rm -f "$work/ready"
	"$work/powercut" record nbd --listen "127.0.0.1:$port" --size "$SIZE" --ready-file "$work/ready" "$@" 2>"$work/server.err" &
	local p=$!; pids+=("$p")
	for _ in $(seq 200); do [ -s "$work/ready" ] && break; sleep 0.05; done
	[ -s "$work/ready" ] || { cat "$work/server.err" >&2; exit 1; }
	fio_iops "nbd://127.0.0.1:$port"
	kill -INT "$p"; wait "$p"
	pids=("${pids[@]/$p}")
}

run_nbdkit() { # run_nbdkit PORT
	rm -f "$work/nbdkit.pid"
	nbdkit -f -i 127.0.0.1 -p "$1" -P "$work/nbdkit.pid" memory "$SIZE" &
	local p=$!; pids+=("$p")
	for _ in $(seq 200); do [ -s "$work/nbdkit.pid" ] && break; sleep 0.05; done
	fio_iops "nbd://127.0.0.1:$1"
	kill "$p"; wait "$p" 2>/dev/null || true
	pids=("${pids[@]/$p}")
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# fio $(fio --version), $(nbdkit --version | head -1), $(go version | cut -d' ' -f3)"
echo "# fio --ioengine=nbd --rw=randwrite --bs=4k --iodepth=$IODEPTH --runtime=$RUNTIME --size=$SIZE"
printf '%-6s %-28s %8s\n' round server iops
declare -A sum
for r in $(seq "$ROUNDS"); do
	run_nbdkit 10901 >"$work/iops"; i=$(<"$work/iops");                                       printf '%-6s %-28s %8s\n' "$r" "nbdkit memory" "$i"; sum[nbdkit]=$(( ${sum[nbdkit]:-0} + i ))
	rm -f "$work/b.pclog"
	run_powercut 10902 --log "$work/b.pclog" >"$work/iops"; i=$(<"$work/iops");               printf '%-6s %-28s %8s\n' "$r" "powercut record nbd" "$i"; sum[rec]=$(( ${sum[rec]:-0} + i ))
	echo "#        log: $(stat -c %s "$work/b.pclog") bytes" ; rm -f "$work/b.pclog"
	run_powercut 10903 --no-record >"$work/iops"; i=$(<"$work/iops");                         printf '%-6s %-28s %8s\n' "$r" "powercut --no-record" "$i"; sum[norec]=$(( ${sum[norec]:-0} + i ))
done
nk=$(( sum[nbdkit] / ROUNDS )); rc=$(( sum[rec] / ROUNDS )); nr=$(( sum[norec] / ROUNDS ))
printf '%-6s %-28s %8s\n' mean "nbdkit memory" "$nk" mean "powercut record nbd" "$rc" mean "powercut --no-record" "$nr"
python3 -c "print('recording vs nbdkit: %.2fx; recording vs --no-record: %.2fx; --no-record vs nbdkit: %.2fx' % ($rc/$nk, $rc/$nr, $nr/$nk))"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
