package fsharness

import (
	"os"
	"path/filepath"

	"github.com/powercut/powercut/internal/leftovers"
)

// mountDirs lists the crash-state mount directories that exist: fstool.Mount makes them in the
// process's own directory (leftovers.Dir), mountQuick in the system's temporary directory.
func mountDirs() []string {
	a, _ := filepath.Glob(filepath.Join(os.TempDir(), "powercut-fs-mnt-*"))
	b, _ := filepath.Glob(filepath.Join(leftovers.Dir(), "powercut-fs-mnt-*"))
	return append(a, b...)
}
