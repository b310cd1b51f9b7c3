#!/bin/sh
# powercut fs check: every file whose fsync-N mark was issued before the crash point
# (POWERCUT_LAST_MARK = fsync-K covers files 1..K) must exist with exactly its content.
set -u
last=${POWERCUT_LAST_MARK:-}
case "$last" in
fsync-*) n=${last#fsync-} ;;
*) n=0 ;;
esac
i=1
fail=0
while [ "$i" -le "$n" ]; do
	f="$POWERCUT_MNT/file-$i"
	if [ ! -f "$f" ]; then
		echo "file-$i missing although fsync-$i was issued (last mark $last)"
		fail=1
	elif ! yes "file $i: written by the powercut fs workload" | head -n 400 | cmp -s - "$f"; then
		echo "file-$i has wrong content although fsync-$i was issued (last mark $last): $(wc -c <"$f") bytes"
		fail=1
	fi
	i=$((i + 1))
done
exit $fail
