package fsgen

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Field is a set of object fields a persistence point can promise.
type Field uint16

const (
	FType Field = 1 << iota
	FSize
	FMode
	FNlink
	FXattrs
	FTarget
	FData
	FEntries
)

// FAll is every field; the oracle compares on each object only those meaningful for its type.
const FAll = FType | FSize | FMode | FNlink | FXattrs | FTarget | FData | FEntries

var fieldNames = []struct {
	f    Field
	name string
}{{FType, "type"}, {FSize, "size"}, {FMode, "mode"}, {FNlink, "nlink"}, {FXattrs, "xattrs"},
	{FTarget, "target"}, {FData, "data"}, {FEntries, "entries"}}

func (f Field) String() string {
	var s []string
	for _, fn := range fieldNames {
		if f&fn.f != 0 {
			s = append(s, fn.name)
		}
	}
	return strings.Join(s, ",")
}

// Guarantees is one row set of the table in docs/fs-guarantees.md: what each persistence point
// promises on a file system. The oracle checks exactly this, nothing more.
type Guarantees struct {
	FS string
	// FsyncFile, FdatasyncFile and FsyncDir are the fields promised on the object synced.
	FsyncFile, FdatasyncFile, FsyncDir Field
	// Names: fsync/fdatasync of an object also persists the path it was synced by (its entry in
	// its parent, and every ancestor's), even when the entries are new. Not POSIX; ext4, xfs and
	// btrfs do it (see the doc).
	Names bool
	// ChildSymlinks: fsync of a directory also persists the target of each symlink it contains
	// (xfstests generic/348). Not POSIX.
	ChildSymlinks bool
}

// ErrUnknownFS is returned by GuaranteesFor for a file system without a table row.
var ErrUnknownFS = errors.New("no crash guarantees table for this file system")

const (
	posixFsyncFile = FType | FSize | FMode | FNlink | FXattrs | FData
	posixFdatasync = FType | FSize | FData
	posixFsyncDir  = FType | FMode | FNlink | FXattrs | FEntries
)

// GuaranteesFor returns the table for fs: "ext4", "xfs", "btrfs", or "posix" (what POSIX and the
// Linux man pages promise on any file system; also the fallback a caller may choose for others).
func GuaranteesFor(fs string) (Guarantees, error) {
	g := Guarantees{FS: fs, FsyncFile: posixFsyncFile, FdatasyncFile: posixFdatasync, FsyncDir: posixFsyncDir}
	switch fs {
	case "posix":
	case "ext4", "xfs", "btrfs":
		g.Names = true
		g.ChildSymlinks = true
	default:
		return Guarantees{}, fmt.Errorf("%w: %q (have ext4, xfs, btrfs, posix)", ErrUnknownFS, fs)
	}
	return g, nil
}

// Expect is one promise of a persistence point: the fields of one path.
type Expect struct {
	Path   string `json:"path"`
	Fields Field  `json:"fields"`
	// Named: the path itself is promised to exist (a missing object is a violation). Without it
	// the fields are checked only if the path exists (POSIX fsync does not persist the name).
	Named bool `json:"named,omitempty"`
}

// Promise computes what persistence point o promised, from the tree right after it returned.
func (g Guarantees) Promise(o Op, t Tree) []Expect {
	var out []Expect
	ancestors := func(p string) {
		for d := parent(p); g.Names && p != "." && d != "."; d = parent(d) {
			out = append(out, Expect{Path: d, Fields: FType, Named: true})
		}
	}
	switch o.Kind {
	case Sync:
		for _, p := range t.Paths() {
			out = append(out, Expect{Path: p, Fields: FAll, Named: true})
		}
		return out
	case Fsync, Fdatasync:
		obj := t[o.Path]
		if obj == nil {
			return nil
		}
		f := g.FsyncFile
		switch {
		case obj.Type == TypeDir:
			f = g.FsyncDir
		case o.Kind == Fdatasync:
			f = g.FdatasyncFile
		}
		out = append(out, Expect{Path: o.Path, Fields: f, Named: g.Names || o.Path == "."})
		ancestors(o.Path)
		if obj.Type == TypeDir && g.ChildSymlinks {
			names := make([]string, 0, len(obj.Entries))
			for n, ty := range obj.Entries {
				if ty == TypeSymlink {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			for _, n := range names {
				out = append(out, Expect{Path: joinRel(o.Path, n), Fields: FType | FTarget, Named: true})
			}
		}
	}
	return out
}

func joinRel(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}
