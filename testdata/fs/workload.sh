#!/bin/sh
# powercut fs workload: write POWERCUT_FILES files (default 3), fsync each (and its directory),
# then mark fsync-I. From that mark on, the file system has promised file I: fsync returned.
set -eu
n=${POWERCUT_FILES:-3}
i=1
while [ "$i" -le "$n" ]; do
	f="$POWERCUT_MNT/file-$i"
	yes "file $i: written by the powercut fs workload" | head -n 400 >"$f"
	sync "$f"             # fsync(2) on the file
	sync "$POWERCUT_MNT"  # fsync(2) on the directory holding its name
	powercut mark "fsync-$i"
	i=$((i + 1))
done
