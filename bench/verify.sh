#!/bin/sh
# Benchmark: powercut verify against fio --verify=crc32c on the same file, same block size and
# iodepth. Both tools write every block of the region once and then read every block back and
# verify it; the figure compared is bytes moved (written + read back) per second of wall time.
#
#   bench/verify.sh [SIZE_MIB] [IODEPTH] [BS]      (defaults 256 16 4096)
#
# fio runs with ioengine=io_uring so that iodepth means requests in flight (powercut verify runs
# --iodepth workers), and once more at iodepth 1 with psync, fio's cheapest engine.
# powercut's time includes its final fdatasync; fio's does not (end_fsync=0). Page cache is shared: both run buffered on the same file.
set -eu
SIZE_MIB=${1:-256}
DEPTH=${2:-16}
BS=${3:-4096}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pc-bench-verify.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PC="$WORK/powercut"
(cd "$ROOT" && go build -o "$PC" ./cmd/powercut)
FILE="$WORK/target.img"
truncate -s "${SIZE_MIB}M" "$FILE"
BLOCKS=$((SIZE_MIB * 1024 * 1024 / BS))

now() { date +%s.%N; }
rate() { echo "$1 $2 $3" | awk '{ printf "%.1f", ($1 / 1048576) / ($3 - $2) }'; }

run_fio() { # $1 = write|randwrite, $2 = engine, $3 = iodepth
	s=$(now)
	fio --name=verify --filename="$FILE" --size="${SIZE_MIB}M" --bs="$BS" --rw="$1" --ioengine="$2" \
		--iodepth="$3" --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output="$WORK/fio.out" >/dev/null
	e=$(now)
	rate $((2 * SIZE_MIB * 1024 * 1024)) "$s" "$e"
}

run_pc() { # $1 = write|randwrite, $2 = iodepth
	s=$(now)
	"$PC" verify --target "$FILE" --size "${SIZE_MIB}M" --bs "$BS" --rw "$1" --iodepth "$2" \
		--ops "$BLOCKS" --verify-all --json >"$WORK/pc.json"
	e=$(now)
	bytes=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["bytes_read"]+r["bytes_written"])' "$WORK/pc.json")
	rate "$bytes" "$s" "$e"
}

echo "# verify benchmark: ${SIZE_MIB} MiB file, bs ${BS}, iodepth ${DEPTH}, $(nproc) cores, $(fio --version)"
for mode in write randwrite; do
	for i in 1 2 3; do
		f=$(run_fio "$mode" io_uring "$DEPTH")
		p=$(run_pc "$mode" "$DEPTH")
		echo "$mode iodepth $DEPTH run $i: fio(io_uring) ${f} MiB/s, powercut ${p} MiB/s"
	done
	f=$(run_fio "$mode" psync 1)
	p=$(run_pc "$mode" 1)
	echo "$mode iodepth 1: fio(psync) ${f} MiB/s, powercut ${p} MiB/s"
done
echo "tracking: 8 bytes per block ($((BLOCKS * 8 / 1024)) KiB for ${BLOCKS} blocks); --fsync-every adds 24 bytes per operation between flushes"
