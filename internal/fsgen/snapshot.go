package fsgen

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Type of an object in a snapshot.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeOther   = "other"
)

// Object is what a snapshot records of one path. Data is kept whole (the generated files are a
// few tens of KiB) so that the oracle can accept any byte-wise mix of the versions a crash may
// have landed; Hash is its digest for reports.
type Object struct {
	Type    string            `json:"type"`
	Mode    uint32            `json:"mode"` // permission bits (07777)
	Size    int64             `json:"size"`
	Nlink   uint64            `json:"nlink"`
	Xattrs  map[string]string `json:"xattrs,omitempty"` // user.* only
	Target  string            `json:"target,omitempty"`
	Data    []byte            `json:"data,omitempty"`
	Hash    string            `json:"hash,omitempty"`
	Entries map[string]string `json:"entries,omitempty"` // name -> type
}

// Tree maps a path relative to the mount ("." is the root) to its object.
type Tree map[string]*Object

// Paths returns the tree's paths in sorted order.
func (t Tree) Paths() []string {
	ps := make([]string, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// maxSnapshotData bounds the data a snapshot keeps per file: the workloads' files are far smaller,
// and a larger file (a stray image, lost+found content) is recorded by hash and size only.
const maxSnapshotData = 1 << 20

// Snapshot walks the tree under root and records every object. It reads with O_NOATIME so that
// taking a snapshot during a recording issues no access-time writes of its own.
func Snapshot(root string) (Tree, error) {
	t := Tree{}
	if err := snapshotDir(root, ".", t); err != nil {
		return nil, err
	}
	return t, nil
}

func typeOf(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile
	case unix.S_IFDIR:
		return TypeDir
	case unix.S_IFLNK:
		return TypeSymlink
	}
	return TypeOther
}

func snapshotObject(root, rel string) (*Object, error) {
	abs := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	o := &Object{Type: typeOf(st.Mode), Mode: st.Mode & 07777, Size: st.Size, Nlink: uint64(st.Nlink)}
	switch o.Type {
	case TypeSymlink:
		tgt, err := os.Readlink(abs)
		if err != nil {
			return nil, err
		}
		o.Target = tgt
		return o, nil
	case TypeFile, TypeDir:
	default:
		return o, nil
	}
	fd, err := openNoatime(abs, unix.O_RDONLY)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), abs)
	defer f.Close()
	if o.Xattrs, err = readXattrs(fd); err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: rel, Err: err}
	}
	if o.Type == TypeFile {
		h := sha256.New()
		buf := make([]byte, 0, min(max(st.Size, 0), maxSnapshotData))
		n := int64(0)
		chunk := make([]byte, 64<<10)
		for {
			m, rerr := f.Read(chunk)
			h.Write(chunk[:m])
			if n+int64(m) <= maxSnapshotData {
				buf = append(buf, chunk[:m]...)
			}
			n += int64(m)
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return nil, &os.PathError{Op: "read", Path: rel, Err: rerr}
			}
		}
		if n <= maxSnapshotData {
			o.Data = buf
		}
		o.Hash = hex.EncodeToString(h.Sum(nil))[:16]
		return o, nil
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: rel, Err: err}
	}
	o.Entries = map[string]string{}
	for _, n := range names {
		var cst unix.Stat_t
		if err := unix.Lstat(filepath.Join(abs, n), &cst); err != nil {
			return nil, &os.PathError{Op: "lstat", Path: path.Join(rel, n), Err: err}
		}
		o.Entries[n] = typeOf(cst.Mode)
	}
	return o, nil
}

func snapshotDir(root, rel string, t Tree) error {
	o, err := snapshotObject(root, rel)
	if err != nil {
		return err
	}
	t[rel] = o
	if o.Type != TypeDir {
		return nil
	}
	names := make([]string, 0, len(o.Entries))
	for n := range o.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := snapshotDir(root, path.Join(rel, n), t); err != nil {
			return err
		}
	}
	return nil
}

// openNoatime opens with O_NOATIME, falling back without it where the kernel refuses (EPERM for a
// file the caller does not own).
func openNoatime(p string, flags int) (int, error) {
	fd, err := unix.Open(p, flags|unix.O_NOATIME|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err == unix.EPERM {
		fd, err = unix.Open(p, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	return fd, err
}

func readXattrs(fd int) (map[string]string, error) {
	sz, err := unix.Flistxattr(fd, nil)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Flistxattr(fd, buf); err != nil {
		return nil, err
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		vs, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		v := make([]byte, vs)
		if vs, err = unix.Fgetxattr(fd, name, v); err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(v[:vs])
	}
	return out, nil
}
