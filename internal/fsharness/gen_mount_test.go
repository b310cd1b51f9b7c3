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
