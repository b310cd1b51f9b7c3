#!/bin/sh
# Explore one recording on a Slurm cluster in N shards and merge their results:
#
#   deploy/slurm/submit.sh REC.pclog N [RESULTS_DIR] -- <explore flags>
#   e.g. deploy/slurm/submit.sh rec.pclog 16 -- --base base.img --fsck ext4 --model reorder
#
# submits a job array of N shards (shard.sbatch) and a merge job that runs when all succeeded
# (merge.sbatch, --dependency=afterok). RESULTS_DIR (default results-<recording name>) and the
# recording must be on a file system every node shares. Prints the two job IDs.
#
# Environment: POWERCUT (the binary; default powercut on PATH), SBATCH_FLAGS (extra sbatch flags
# for both jobs, e.g. "--partition=batch --time=4:00:00"), POWERCUT_PARALLEL (at most that many
# shards at once: --array=0-(N-1)%P).
set -eu
usage() {
	echo "usage: $0 REC.pclog N [RESULTS_DIR] -- <explore flags>" >&2
	exit 2
}
[ $# -ge 2 ] || usage
rec=$1
n=$2
shift 2
case $n in
'' | *[!0-9]*) usage ;;
esac
[ "$n" -ge 1 ] || usage
dir="results-$(basename "$rec" .pclog)"
if [ $# -gt 0 ]; then
	case $1 in
	--) ;;
	-*) usage ;; # explore flags come after --
	*)
		dir=$1
		shift
		;;
	esac
fi
if [ $# -gt 0 ]; then
	[ "$1" = -- ] || usage
	shift
fi
[ -r "$rec" ] || {
	echo "$0: cannot read $rec" >&2
	exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
rec=$(cd "$(dirname "$rec")" && pwd)/$(basename "$rec")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
array="0-$((n - 1))"
if [ -n "${POWERCUT_PARALLEL:-}" ]; then
	array="$array%$POWERCUT_PARALLEL"
fi
# shellcheck disable=SC2086 # SBATCH_FLAGS is a list of flags
jid=$(sbatch --parsable ${SBATCH_FLAGS:-} --array="$array" --output="$dir/shard-%a.out" \
	"$here/shard.sbatch" "$rec" "$dir" "$@")
jid=${jid%%;*}
# shellcheck disable=SC2086
mid=$(sbatch --parsable ${SBATCH_FLAGS:-} --dependency="afterok:$jid" --kill-on-invalid-dep=yes \
	--output="$dir/merge.out" "$here/merge.sbatch" "$dir" "$n")
mid=${mid%%;*}
echo "shards: job array $jid ($n tasks); merge: job $mid"
echo "results: $dir/merged.jsonl (report text in $dir/merge.out; 'powercut report $dir/merged.jsonl --out report.html')"
