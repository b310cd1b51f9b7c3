package fsgen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Class is the B3-style classification of a difference. The harness adds its own for states that
// do not mount or fail fsck.
type Class string

const (
	ClassUnusable          Class = "unusable"
	ClassFileMissing       Class = "file-missing"
	ClassDataCorrupted     Class = "data-corrupted"
	ClassOldContent        Class = "old-content"
	ClassMetadataCorrupted Class = "metadata-corrupted"
)

// severity orders the classes for a verdict's summary (most severe first).
var severity = map[Class]int{ClassUnusable: 5, ClassFileMissing: 4, ClassDataCorrupted: 3,
	ClassOldContent: 2, ClassMetadataCorrupted: 1}

// Diff is one broken promise: what the path's field should have been and what the crash state has.
type Diff struct {
	Path     string `json:"path"`
	Field    string `json:"field"`
	Expected string `json:"expected"`
	Found    string `json:"found"`
	Class    Class  `json:"class"`
}

func (d Diff) String() string {
	return fmt.Sprintf("%s %s: expected %s, found %s (%s)", d.Path, d.Field, d.Expected, d.Found, d.Class)
}

// Verdict is the oracle's answer for one crash state.
type Verdict struct {
	// Last is the persistence point whose promise was checked (0: none issued before the crash).
	Last  int    `json:"last"`
	Diffs []Diff `json:"diffs,omitempty"`
	// Class is the most severe class among Diffs ("" when there is none).
	Class Class `json:"class,omitempty"`
}

// OK reports whether the state kept every promise and is usable.
func (v *Verdict) OK() bool { return len(v.Diffs) == 0 }

// ErrBadPoint is returned for a persistence point number the trace does not have.
var ErrBadPoint = errors.New("no such persistence point in the trace")

// LastPoint returns the highest persistence point among the marks a crash state contains (the
// harness knows them from the log); 0 when none of them is a persistence point mark.
func LastPoint(marks []string) int {
	last := 0
	for _, m := range marks {
		if n, ok := ParsePointName(m); ok && n > last {
			last = n
		}
	}
	return last
}

// Check compares the recovered tree under mnt with what the persistence points 1..last promised
// (Compare), then checks the tree is usable (Usable). It modifies the tree: run it on a throw-away
// copy of the crash state.
func Check(mnt string, tr *Trace, last int) (*Verdict, error) {
	diffs, err := Compare(mnt, tr, last)
	if err != nil {
		return nil, err
	}
	diffs = append(diffs, Usable(mnt)...)
	v := &Verdict{Last: last, Diffs: diffs}
	for _, d := range diffs {
		if severity[d.Class] > severity[v.Class] {
			v.Class = d.Class
		}
	}
	return v, nil
}

// promised is the effective promise on one path once points 1..last have been issued: for each
// field, the state index from which its value is pinned (the latest point that promised it).
type promised struct {
	from      map[Field]int
	namedFrom int // -1: the path's existence is not promised
}

// Compare checks every promise of points 1..last. A promise made at point j pins a field to the
// values the object had from point j to the end of the workload: the crash may have landed any
// operation after the last mark, wholly or in part, so file data is accepted byte by byte from
// any of those versions (bytes past a version's size may read as zeros), directory entries name
// by name, the other fields as any one of the versions. Fields no point promised are not looked at.
func Compare(mnt string, tr *Trace, last int) ([]Diff, error) {
	if last < 0 || last > len(tr.Points) {
		return nil, fmt.Errorf("%w: %d (trace has %d)", ErrBadPoint, last, len(tr.Points))
	}
	eff := map[string]*promised{}
	for _, p := range tr.Points[:last] {
		for _, e := range p.Promised {
			pr := eff[e.Path]
			if pr == nil {
				pr = &promised{from: map[Field]int{}, namedFrom: -1}
				eff[e.Path] = pr
			}
			for _, fn := range fieldNames {
				if e.Fields&fn.f != 0 {
					pr.from[fn.f] = p.State
				}
			}
			if e.Named {
				pr.namedFrom = p.State
			}
		}
	}
	if len(eff) == 0 {
		return nil, nil
	}
	found, err := Snapshot(mnt)
	if err != nil {
		return []Diff{{Path: ".", Field: "readable", Expected: "a readable tree", Found: err.Error(), Class: ClassUnusable}}, nil
	}
	paths := make([]string, 0, len(eff))
	for p := range eff {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var diffs []Diff
	for _, p := range paths {
		diffs = append(diffs, comparePath(p, eff[p], found[p], tr.States)...)
	}
	return diffs, nil
}

// versions returns the objects at path in states[from:] (absent ones left out) and whether the
// path is absent in one of them.
func versions(states []State, from int, path string) (objs []*Object, absentSeen bool) {
	for _, s := range states[from:] {
		if o := s.Tree[path]; o != nil {
			objs = append(objs, o)
		} else {
			absentSeen = true
		}
	}
	return objs, absentSeen
}

func sameType(objs []*Object, t string) []*Object {
	var out []*Object
	for _, o := range objs {
		if o.Type == t {
			out = append(out, o)
		}
	}
	return out
}

func set[T comparable](objs []*Object, f func(*Object) T) []T {
	var out []T
	seen := map[T]bool{}
	for _, o := range objs {
		if v := f(o); !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func oneOf[T any](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "one of " + strings.Join(s, " | ")
}

func contains[T comparable](vs []T, v T) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func comparePath(path string, pr *promised, got *Object, states []State) []Diff {
	if got == nil {
		if pr.namedFrom < 0 {
			return nil
		}
		if _, absentOK := versions(states, pr.namedFrom, path); absentOK {
			return nil
		}
		return []Diff{{Path: path, Field: "exists", Expected: "present", Found: "missing", Class: ClassFileMissing}}
	}
	var diffs []Diff
	add := func(field, exp, found string, c Class) {
		diffs = append(diffs, Diff{Path: path, Field: field, Expected: exp, Found: found, Class: c})
	}
	// The type first: the other fields are compared only with versions of the found type.
	typeFrom := -1
	for _, from := range pr.from {
		if typeFrom < 0 || from < typeFrom {
			typeFrom = from
		}
	}
	all, _ := versions(states, typeFrom, path)
	if len(sameType(all, got.Type)) == 0 {
		if len(all) > 0 {
			add("type", oneOf(set(all, func(o *Object) string { return o.Type })), got.Type, ClassMetadataCorrupted)
		}
		return diffs
	}
	for _, fn := range fieldNames {
		from, ok := pr.from[fn.f]
		if !ok || fn.f == FType {
			continue
		}
		vs, _ := versions(states, from, path)
		vs = sameType(vs, got.Type)
		if len(vs) == 0 {
			continue
		}
		diffs = append(diffs, compareField(path, fn.f, got, vs, olderVersions(states, from, path, got.Type))...)
	}
	return diffs
}

// compareField compares one promised field of the object found at path with the versions vs it
// may hold; older are the versions before the promise ("old content").
func compareField(path string, f Field, got *Object, vs, older []*Object) []Diff {
	var diffs []Diff
	add := func(field, exp, found string, c Class) {
		diffs = append(diffs, Diff{Path: path, Field: field, Expected: exp, Found: found, Class: c})
	}
	switch f {
	case FSize:
		if got.Type != TypeFile {
			return nil
		}
		sizes := set(vs, func(o *Object) int64 { return o.Size })
		if !contains(sizes, got.Size) {
			c := ClassMetadataCorrupted
			if contains(set(older, func(o *Object) int64 { return o.Size }), got.Size) {
				c = ClassOldContent
			}
			add("size", oneOf(sizes), fmt.Sprint(got.Size), c)
		}
	case FMode:
		modes := set(vs, func(o *Object) string { return fmt.Sprintf("%04o", o.Mode) })
		if m := fmt.Sprintf("%04o", got.Mode); !contains(modes, m) {
			add("mode", oneOf(modes), m, ClassMetadataCorrupted)
		}
	case FNlink:
		ns := set(vs, func(o *Object) uint64 { return o.Nlink })
		if !contains(ns, got.Nlink) {
			add("nlink", oneOf(ns), fmt.Sprint(got.Nlink), ClassMetadataCorrupted)
		}
	case FXattrs:
		if got.Type == TypeSymlink {
			return nil
		}
		xs := set(vs, func(o *Object) string { return xattrString(o.Xattrs) })
		if x := xattrString(got.Xattrs); !contains(xs, x) {
			add("xattrs", oneOf(xs), x, ClassMetadataCorrupted)
		}
	case FTarget:
		if got.Type != TypeSymlink {
			return nil
		}
		ts := set(vs, func(o *Object) string { return fmt.Sprintf("%q", o.Target) })
		if t := fmt.Sprintf("%q", got.Target); !contains(ts, t) {
			add("target", oneOf(ts), t, ClassMetadataCorrupted)
		}
	case FData:
		if got.Type != TypeFile {
			return nil
		}
		if d, ok := compareData(got, vs, older); !ok {
			diffs = append(diffs, Diff{Path: path, Field: "data", Expected: d.Expected, Found: d.Found, Class: d.Class})
		}
	case FEntries:
		if got.Type != TypeDir {
			return nil
		}
		return compareEntries(path, got, vs)
	}
	return diffs
}

// olderVersions are the versions of path before state from, of type t: what "old content" means.
func olderVersions(states []State, from int, path, t string) []*Object {
	var out []*Object
	for _, s := range states[:from] {
		if o := s.Tree[path]; o != nil && o.Type == t {
			out = append(out, o)
		}
	}
	return out
}

func xattrString(x map[string]string) string {
	if len(x) == 0 {
		return "{}"
	}
	ks := make([]string, 0, len(x))
	for k := range x {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range ks {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%q", k, x[k])
	}
	b.WriteString("}")
	return b.String()
}

// byteFrom reports whether byte i of got is explained by one of vs: the version's byte, or a zero
// past the version's size (a size update that landed before its data, or a hole).
func byteFrom(i int, c byte, vs []*Object) bool {
	for _, v := range vs {
		if i < len(v.Data) && v.Data[i] == c || i >= len(v.Data) && c == 0 {
			return true
		}
	}
	return false
}

func compareData(got *Object, vs, older []*Object) (Diff, bool) {
	hashes := set(vs, func(o *Object) string { return o.Hash })
	if contains(hashes, got.Hash) {
		return Diff{}, true
	}
	for _, v := range vs {
		if v.Data == nil && v.Size > 0 {
			// Too large to have been kept: only whole versions can be matched.
			return Diff{Expected: oneOf(hashes), Found: got.Hash, Class: ClassDataCorrupted}, false
		}
	}
	if got.Data == nil && got.Size > 0 {
		return Diff{Expected: oneOf(hashes), Found: got.Hash + " (too large to compare)", Class: ClassDataCorrupted}, false
	}
	bad := -1
	for i, c := range got.Data {
		if !byteFrom(i, c, vs) {
			bad = i
			break
		}
	}
	if bad < 0 {
		return Diff{}, true
	}
	c := ClassDataCorrupted
	oldOK := len(older) > 0
	for i, b := range got.Data {
		if !byteFrom(i, b, append(older, vs...)) {
			oldOK = false
			break
		}
	}
	if oldOK {
		c = ClassOldContent
	}
	return Diff{
		Expected: fmt.Sprintf("%s (at offset %d: %s)", oneOf(hashes), bad, byteSet(bad, vs)),
		Found:    fmt.Sprintf("%s (at offset %d: 0x%02x)", got.Hash, bad, got.Data[bad]),
		Class:    c,
	}, false
}

func byteSet(i int, vs []*Object) string {
	var bs []string
	for _, v := range vs {
		s := "0x00"
		if i < len(v.Data) {
			s = fmt.Sprintf("0x%02x", v.Data[i])
		}
		if !contains(bs, s) {
			bs = append(bs, s)
		}
	}
	return oneOf(bs)
}

func compareEntries(path string, got *Object, vs []*Object) []Diff {
	var diffs []Diff
	names := map[string]bool{}
	for n := range got.Entries {
		names[n] = true
	}
	for _, v := range vs {
		for n := range v.Entries {
			names[n] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		t, present := got.Entries[n]
		if !present {
			t = "absent"
		}
		exp := set(vs, func(o *Object) string {
			if e, ok := o.Entries[n]; ok {
				return e
			}
			return "absent"
		})
		if contains(exp, t) {
			continue
		}
		c := ClassMetadataCorrupted
		if !present {
			c = ClassFileMissing
		}
		diffs = append(diffs, Diff{Path: path, Field: "entry " + n, Expected: oneOf(exp), Found: t, Class: c})
	}
	return diffs
}

// probeName is the file the usability check creates and deletes in every directory.
const probeName = ".powercut-probe"

// Usable checks the recovered tree can still be used: a file can be created, written and deleted
// in every directory, then everything can be removed. The root's lost+found is kept: e2fsck
// reports its absence as an error, which would be blamed on the crash.
func Usable(mnt string) []Diff {
	var diffs []Diff
	bad := func(p, field, exp string, err error) {
		rel, _ := filepath.Rel(mnt, p)
		diffs = append(diffs, Diff{Path: rel, Field: field, Expected: exp, Found: err.Error(), Class: ClassUnusable})
	}
	var dirs []string
	werr := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			bad(p, "readable", "a readable directory", err)
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if werr != nil {
		bad(mnt, "readable", "a readable tree", werr)
	}
	for _, d := range dirs {
		probe := filepath.Join(d, probeName)
		fd, err := unix.Open(probe, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			bad(d, "create", "a new file can be created", err)
			continue
		}
		_, werr := unix.Write(fd, []byte("powercut\n"))
		cerr := unix.Close(fd)
		if err := errors.Join(werr, cerr); err != nil {
			bad(d, "write", "a new file can be written", err)
		}
		if err := unix.Unlink(probe); err != nil {
			bad(d, "delete", "a new file can be deleted", err)
		}
	}
	ents, err := os.ReadDir(mnt)
	if err != nil {
		bad(mnt, "readable", "a readable root", err)
		return diffs
	}
	for _, e := range ents {
		if e.Name() == "lost+found" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(mnt, e.Name())); err != nil {
			bad(filepath.Join(mnt, e.Name()), "remove", "everything can be removed", err)
		}
	}
	return diffs
}
