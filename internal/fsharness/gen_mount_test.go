package fsharness

import (
	"testing"

	"golang.org/x/sys/unix"
)

// mount(8)'s flag options must become mount(2) flags: passed as file-system data, ext4 and xfs
// refuse "ro" or "noatime" and every crash state would be reported unmountable.
func TestSplitMountOptions(t *testing.T) {
	for _, c := range []struct {
		in    string
		flags uintptr
		data  string
	}{
		{"", 0, ""},
		{"nobarrier", 0, "nobarrier"},
		{"ro,noatime,nobarrier,data=journal", unix.MS_RDONLY | unix.MS_NOATIME, "nobarrier,data=journal"},
		{"loop,nouuid", 0, "nouuid"},
		{"ro,rw", 0, ""},
	} {
		f, d := splitMountOptions(c.in)
		if f != c.flags || d != c.data {
			t.Errorf("splitMountOptions(%q) = %#x, %q; want %#x, %q", c.in, f, d, c.flags, c.data)
		}
	}
}

// btrfs check fails with "could not check mount status" when a loop device of a parallel job
// vanishes while it scans block devices: the image is not at fault, the check is run again.
func TestTransientFsck(t *testing.T) {
	out := "ERROR: could not check mount status: No such device or address\nOpening filesystem to check...\n"
	if !transientFsck("btrfs", out) {
		t.Errorf("btrfs mount-status failure not recognised as transient")
	}
	if transientFsck("btrfs", "ERROR: errors found in fs roots\n") || transientFsck("ext4", out) {
		t.Errorf("a real fsck error taken as transient")
	}
}
