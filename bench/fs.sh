#!/bin/sh
# bench/fs.sh: exploration rate of `powercut fs` (states checked per second: scratch file, loop,
# mount = journal replay, umount, read-only fsck) against running the same fsck alone on the
# same crash images:
#   (a) powercut fs --fs FS, no --check: mount + umount + fsck per distinct state;
#   (b) powercut explore --fsck FS on the same log/base/model: fsck alone (ext4: e2fsck replays the
#       journal itself), same scratch files, same states;
#   (c) plain files: the prefix image at each mark and at the end, rebuilt with powercut replay,
#       then `e2fsck -E journal_only -y` + `e2fsck -fn` on a copy (no FUSE, no powercut at all).
# Needs root, FUSE, loop devices, jq. Usage: bench/fs.sh [FS] [STATES]
set -eu
fs=${1:-ext4}
states=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/powercut-bench-fs.XXXXXX)
trap 'rm -rf "$work"' EXIT
pc="$work/powercut"
(cd "$here" && go build -o "$pc" ./cmd/powercut)
flags="--model reorder --strategy drop-k --k 1 --states $states --jobs 1"

# (a) powercut fs, mount + fsck per state
POWERCUT_FILES=4 "$pc" fs --fs "$fs" --workload "$here/testdata/fs/workload.sh" $flags --out "$work/out" --json >"$work/a.json" 2>"$work/a.err" || true
a_checked=$(jq .checked "$work/a.json")
a_secs=$(jq .explore_seconds "$work/a.json")
ops=$(jq .recorded_ops "$work/a.json")
viol=$(jq '.violations | length' "$work/a.json")

# (b) fsck alone through powercut explore, same states
"$pc" explore --log "$work/out/fs.pclog" --base "$work/out/base.img" $flags --fsck "$fs" --json >"$work/b.json" 2>"$work/b.err" || true
b_checked=$(jq .checked "$work/b.json")
b_secs=$(jq .seconds "$work/b.json")

# (c) plain fsck on plain files (ext4 only: the others cannot replay their log without a mount)
c_n=0
c_secs=0
if [ "$fs" = ext4 ]; then
	for m in $("$pc" log dump "$work/out/fs.pclog" 2>/dev/null | awk '$2 == "MARK" {gsub(/"/, "", $3); print $3}' | sort -u); do
		"$pc" replay --log "$work/out/fs.pclog" --base "$work/out/base.img" --to-mark "$m" --out "$work/img-$m" >/dev/null 2>&1 && c_n=$((c_n + 1))
	done
	start=$(date +%s.%N)
	for img in "$work"/img-*; do
		[ -f "$img" ] || continue
		cp --sparse=always "$img" "$work/copy.img"
		e2fsck -E journal_only -y "$work/copy.img" >/dev/null 2>&1 || true
		e2fsck -fn "$work/copy.img" >/dev/null 2>&1 || true
	done
	end=$(date +%s.%N)
	c_secs=$(echo "$end - $start" | bc -l 2>/dev/null || python3 -c "print($end - $start)")
fi

rate() { python3 -c "print('%.2f' % ($1 / $2 if $2 > 0 else 0))"; }
echo "fs=$fs recorded_ops=$ops states_flag=$states violations=$viol"
echo "(a) powercut fs (mount+umount+fsck): $a_checked states in ${a_secs}s = $(rate "$a_checked" "$a_secs") states/s"
echo "(b) powercut explore --fsck $fs:       $b_checked states in ${b_secs}s = $(rate "$b_checked" "$b_secs") states/s"
if [ "$c_n" -gt 0 ]; then
	echo "(c) plain e2fsck on plain files:    $c_n images in ${c_secs}s = $(rate "$c_n" "$c_secs") images/s"
fi
python3 -c "
a=$a_checked/$a_secs if $a_secs>0 else 0
b=$b_checked/$b_secs if $b_secs>0 else 0
print('overhead of fs vs fsck alone (b): %.0f%%' % ((b/a-1)*100 if a>0 else 0))
"
