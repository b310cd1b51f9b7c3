#!/bin/bash
# bench/fs.sh: exploration rate of `powercut fs` (distinct crash states checked per second)
# against doing exactly the same per-state work by hand on plain image files (issue 5).
#
# Per round:
#   (a) `powercut fs --fs FS` (no --check) with --jobs 1 and --jobs 2: per distinct state a FUSE
#       scratch file, losetup --direct-io=on, mount (journal replay), umount, losetup -d, fsck -n.
#   (c) the honest baseline: the same distinct states powercut checked in (a, --jobs 1), each
#       rebuilt once with `powercut replay --state ID` into a plain file (not timed), copied fresh
#       before every pass (not timed), then timed per image: losetup [--direct-io=on|off], mount,
#       umount, losetup -d, fsck -n (e2fsck -fn / xfs_repair -n -f / btrfs check --readonly);
#       sequentially, and two at a time (two subshells) against --jobs 2.
#   ext4 only, fsck alone (no mount):
#   (b) `powercut explore --fsck ext4` on the same log/base/model (--jobs 1 and 2): per state
#       e2fsck -E journal_only -y + e2fsck -fn on a FUSE scratch file;
#   (d) plain `e2fsck -E journal_only -y` + `e2fsck -fn` on fresh copies of the same images.
# overhead = baseline_rate / powercut_rate - 1 (target: <= 25%).
#
# Needs root, FUSE, loop devices, bash, jq, awk. Every loop device and mount the script makes is
# released on exit (also on Ctrl-C). Usage: [POWERCUT_BIN=powercut] bench/fs.sh [FS] [ROUNDS] [STATES]
set -euo pipefail
fs=${1:-ext4}
rounds=${2:-2}
states=${3:-3}
export POWERCUT_FILES=${POWERCUT_FILES:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/powercut-bench-fs.XXXXXX)
shm=$(mktemp -d /dev/shm/powercut-bench-fs.XXXXXX) # tmpfs: the baseline without disk I/O

cleanup() {
	set +e
	# mounts of the baseline (under $work or $shm), innermost first
	awk -v w="$work/" -v s="$shm/" 'index($2, w) == 1 || index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	# loop devices whose backing file is under $work or $shm
	losetup -n -O NAME,BACK-FILE -l 2>/dev/null | awk -v w="$work/" -v s="$shm/" 'index($2, w) == 1 || index($2, s) == 1 {print $1}' | while read -r l; do
		losetup -d "$l"
	done
	rm -rf "$work" "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# POWERCUT_BIN: use this binary instead of building the tree (e.g. to compare two versions)
pc=${POWERCUT_BIN:-$work/powercut}
[ -n "${POWERCUT_BIN:-}" ] || (cd "$here" && go build -o "$pc" ./cmd/powercut)
flags=(--model reorder --strategy drop-k --k 1 --states "$states")
mountopts=()
[ "$fs" = xfs ] && mountopts=(-o nouuid) # several states share a UUID, as in powercut fs
case $fs in
ext4) fsck=(e2fsck -fn) ;;
xfs) fsck=(xfs_repair -n -f) ;;
btrfs) fsck=(btrfs check --readonly) ;;
*) echo "unknown fs $fs" >&2; exit 2 ;;
esac

# one IMG DIO: the per-state work of powercut fs on a plain file, run in this shell (no wrapper
# process: only the tools powercut itself runs are started); prints phase times (s).
one() {
	local img=$1 dio=$2 mnt=$1.mnt loop t0 t1 t2 t3 t4 t5 i
	mkdir -p "$mnt"
	t0=$EPOCHREALTIME
	loop=$(losetup --find --show --direct-io="$dio" "$img")
	t1=$EPOCHREALTIME
	mount -t "$fs" "${mountopts[@]}" "$loop" "$mnt" || echo "mount $img failed" >&2
	t2=$EPOCHREALTIME
	umount "$mnt"
	t3=$EPOCHREALTIME
	for i in 1 2 3 4 5 6 7 8 9 10; do losetup -d "$loop" 2>/dev/null && break; sleep 0.05; done
	t4=$EPOCHREALTIME
	LC_ALL=C E2FSCK_CONFIG=/dev/null "${fsck[@]}" "$img" >/dev/null 2>&1 || echo "fsck $img exited $?" >&2
	t5=$EPOCHREALTIME
	rmdir "$mnt"
	echo "$t0 $t1 $t2 $t3 $t4 $t5"
}
# fsckonly IMG: fsck alone, as powercut explore --fsck ext4 runs it
fsckonly() {
	local rc
	LC_ALL=C E2FSCK_CONFIG=/dev/null e2fsck -E journal_only -y "$1" >/dev/null 2>&1 && rc=0 || rc=$?
	[ "$rc" -lt 8 ] || echo "journal replay $1 exited $rc" >&2
	LC_ALL=C E2FSCK_CONFIG=/dev/null e2fsck -fn "$1" >/dev/null 2>&1 || echo "e2fsck -fn $1 exited $?" >&2
}
# each JOBS FUNC ARGS...: FUNC IMG ARGS for every image listed on stdin, JOBS (1 or 2) at a time:
# with 2, two subshells take every other image.
each() {
	local jobs=$1 f=$2 k
	shift 2
	mapfile -t imgs
	if [ "$jobs" = 1 ]; then
		for img in "${imgs[@]}"; do "$f" "$img" "$@"; done
		return
	fi
	for k in 0 1; do
		(for ((x = k; x < ${#imgs[@]}; x += 2)); do "$f" "${imgs[x]}" "$@"; done) &
	done
	wait
}

now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.2f", (s > 0 ? n / s : 0)}'; }
results="$work/results"
: >"$results"
# note WHAT ROUND N SECONDS
note() {
	printf '%-44s round %s: %3d states in %7.3fs = %6s states/s\n' "$1" "$2" "$3" "$4" "$(rate "$3" "$4")"
	echo "$1|$2|$3|$4" >>"$results"
}

# fresh copies of the pristine images of round dir $1 into $2 (not timed)
fresh() {
	rm -rf "$2"
	mkdir "$2"
	for f in "$1"/plain/*.img; do cp --sparse=always "$f" "$2/"; done
	sync
}

# baseline pass: DIR DIO JOBS WHERE(disk|tmpfs) -> seconds; phase times to DIR/phases
baseline() {
	local d=$1 dio=$2 jobs=$3 w=$d/work t0 t1
	[ "$4" = tmpfs ] && w=$shm/work
	fresh "$d" "$w"
	t0=$(now)
	ls "$w"/*.img | each "$jobs" one "$dio" >"$d/phases"
	t1=$(now)
	rm -rf "$w"
	sub "$t1" "$t0"
}

phasesum() {
	awk '{l += $2 - $1; m += $3 - $2; u += $4 - $3; d += $5 - $4; f += $6 - $5; n++}
		END {printf "    per state (ms): losetup %.0f  mount %.0f  umount %.0f  losetup -d %.0f  fsck %.0f\n", 1000*l/n, 1000*m/n, 1000*u/n, 1000*d/n, 1000*f/n}' "$1"
}

echo "fs=$fs rounds=$rounds states=$states files=$POWERCUT_FILES cores=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
# Round 1 records and lists the states; every round then runs powercut and the baselines
# back to back (interleaved, so that other load on the machine hits both alike). Later rounds'
# powercut fs runs record the same workload again (the same number of distinct states, +-2);
# their baselines reuse round 1's images.
d="$work/r1"
for r in $(seq "$rounds"); do
	# (a) powercut fs, --jobs 1 and 2
	for j in 1 2; do
		out=$d
		[ "$r" = 1 ] && [ "$j" = 1 ] || out=$work/scratch-out
		rm -rf "$work/scratch-out"
		"$pc" fs --fs "$fs" --workload "$here/testdata/fs/workload.sh" "${flags[@]}" --jobs "$j" --out "$out" --json >"$work/a.json" 2>"$work/a.err" || { cat "$work/a.err" >&2; exit 1; }
		[ "$(jq '.violations | length' "$work/a.json")" = 0 ] || echo "warning: powercut fs reported violations" >&2
		note "(a) powercut fs --jobs $j" "$r" "$(jq .checked "$work/a.json")" "$(jq .explore_seconds "$work/a.json")"
		[ "$r" = 1 ] && [ "$j" = 1 ] && cp "$work/a.json" "$d.a1.json"
	done

	if [ "$r" = 1 ]; then
		# the distinct states powercut fs checked: explore's dedup key is the image, so the first
		# state of each distinct image (in generation order) is the one checked. List states with a
		# hash of their image (a check script is not mark-blind, so duplicates appear; keep the
		# first per hash). Then rebuild each with powercut replay. Not timed.
		"$pc" explore --log "$d/fs.pclog" --base "$d/base.img" "${flags[@]}" --jobs 1 \
			--check "echo \"\$POWERCUT_STATE \$(sha256sum <\"\$POWERCUT_IMAGE\" | cut -c1-64)\" >>$d/ids.all" >/dev/null
		awk '!seen[$2]++ {print $1}' "$d/ids.all" >"$d/ids"
		n=$(wc -l <"$d/ids")
		[ "$n" = "$(jq .checked "$d.a1.json")" ] || { echo "state list has $n states, powercut fs checked $(jq .checked "$d.a1.json")" >&2; exit 1; }
		echo "    states: $(tr '\n' ' ' <"$d/ids")"
		mkdir "$d/plain"
		while read -r id; do
			"$pc" replay --log "$d/fs.pclog" --base "$d/base.img" --state "$id" --out "$d/plain/tmp.img" >/dev/null
			cp --sparse=always "$d/plain/tmp.img" "$d/plain/$(echo "$id" | tr ':' '_').img"
			rm "$d/plain/tmp.img"
		done <"$d/ids"
	fi

	# (c) the same per-state work on plain files
	for v in "tmpfs on 1" "disk on 1" "tmpfs off 1" "tmpfs on 2" "disk on 2"; do
		set -- $v
		s=$(baseline "$d" "$2" "$3" "$1")
		note "(c) plain $1 dio=$2 -P $3" "$r" "$n" "$s"
		[ "$3" = 1 ] && phasesum "$d/phases"
	done

	if [ "$fs" = ext4 ]; then
		for j in 1 2; do
			"$pc" explore --log "$d/fs.pclog" --base "$d/base.img" "${flags[@]}" --jobs "$j" --fsck ext4 --json >"$work/b.json" || true
			note "(b) powercut explore --fsck ext4 --jobs $j" "$r" "$(jq .checked "$work/b.json")" "$(jq .seconds "$work/b.json")"
			for where in tmpfs disk; do
				w=$d/work
				[ "$where" = tmpfs ] && w=$shm/work
				fresh "$d" "$w"
				t0=$(now)
				ls "$w"/*.img | each "$j" fsckonly
				t1=$(now)
				rm -rf "$w"
				note "(d) plain $where e2fsck jo+fn -P $j" "$r" "$n" "$(sub "$t1" "$t0")"
			done
		done
	fi
done
rm -rf "$work/scratch-out"

echo
echo "summary (each: total states / total seconds over the rounds)"
awk -F'|' -v pairs="(a) powercut fs --jobs 1#(c) plain tmpfs dio=on -P 1;(a) powercut fs --jobs 1#(c) plain tmpfs dio=off -P 1;(a) powercut fs --jobs 1#(c) plain disk dio=on -P 1;(a) powercut fs --jobs 2#(c) plain tmpfs dio=on -P 2;(a) powercut fs --jobs 2#(c) plain disk dio=on -P 2;(b) powercut explore --fsck ext4 --jobs 1#(d) plain tmpfs e2fsck jo+fn -P 1;(b) powercut explore --fsck ext4 --jobs 1#(d) plain disk e2fsck jo+fn -P 1;(b) powercut explore --fsck ext4 --jobs 2#(d) plain tmpfs e2fsck jo+fn -P 2;(b) powercut explore --fsck ext4 --jobs 2#(d) plain disk e2fsck jo+fn -P 2" '
	{n[$1] += $3; s[$1] += $4; if (!($1 in o)) {o[$1] = ++k; name[k] = $1}; rr[$1, $2] = $3 / $4; if ($2 > R) R = $2}
	END {
		for (i = 1; i <= k; i++) {w = name[i]; r[w] = n[w] / s[w]; printf "  %-44s %6.2f states/s\n", w, r[w]}
		np = split(pairs, pp, ";")
		for (i = 1; i <= np; i++) {
			split(pp[i], p, "#"); a = p[1]; b = p[2]
			if (!((a in r) && (b in r) && r[a] > 0)) continue
			m = 0
			for (q = 1; q <= R; q++) if (((a, q) in rr) && ((b, q) in rr)) ov[++m] = 100 * (rr[b, q] / rr[a, q] - 1)
			for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (ov[y] < ov[x]) {t = ov[x]; ov[x] = ov[y]; ov[y] = t}
			med = m % 2 ? ov[(m + 1) / 2] : (ov[m / 2] + ov[m / 2 + 1]) / 2
			printf "  overhead of %-40s over %-30s total %+4.0f%%, per round median %+4.0f%% (%+.0f%% .. %+.0f%%)\n", a, b, 100 * (r[b] / r[a] - 1), med, ov[1], ov[m]
		}
	}' "$results"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
