package fstool

// FsckCommand is the read-only check of each file system, run on an image whose journal/log was
// already replayed by a mount.
func FsckCommand(fs, path string) []string {
	switch fs {
	case "ext4":
		return []string{"e2fsck", "-fn", path}
	case "xfs":
		return []string{"xfs_repair", "-n", "-f", path}
	case "btrfs":
		return []string{"btrfs", "check", "--readonly", path}
	}
	return nil
}
