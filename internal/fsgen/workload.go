package fsgen

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Kind is a file-system operation: a core operation, a setup operation (the same kinds) or a
// persistence point (Fsync, Fdatasync, Sync, None).
type Kind uint8

const (
	Creat Kind = iota + 1
	Mkdir
	Write
	DirectWrite
	MmapWrite
	Falloc
	Truncate
	Link
	Unlink
	Rename  // rename a file to a free name, or a directory
	Replace // rename a file onto an existing file (the atomic-replace idiom)
	Symlink
	SetXattr
	RemoveXattr
	Rmdir
	Fsync
	Fdatasync
	Sync
	None
)

var kindNames = map[Kind]string{
	Creat: "creat", Mkdir: "mkdir", Write: "write", DirectWrite: "dwrite", MmapWrite: "mwrite",
	Falloc: "falloc", Truncate: "truncate", Link: "link", Unlink: "unlink", Rename: "rename",
	Replace: "replace", Symlink: "symlink", SetXattr: "setxattr", RemoveXattr: "rmxattr",
	Rmdir: "rmdir", Fsync: "fsync", Fdatasync: "fdatasync", Sync: "sync", None: "none",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// IsPersist reports whether k is a persistence point (None included).
func (k Kind) IsPersist() bool { return k >= Fsync }

// Shape names where a data operation lands relative to the file's current content.
type Shape uint8

const (
	NoShape    Shape = iota
	Append           // at the current size (aligned up for direct I/O)
	Overwrite        // aligned overwrite of [4096, 8192)
	OverwriteU       // unaligned overwrite of [5000, 8000)
	Extend           // overlaps the tail and extends the file: [12288, 20480)
	Shrink           // truncate to 8192
	ShrinkU          // truncate to 5000
	Grow             // truncate to 24576
)

var shapeNames = map[Shape]string{
	Append: "append", Overwrite: "ovw", OverwriteU: "ovwu", Extend: "extend",
	Shrink: "shrink", ShrinkU: "shrinku", Grow: "grow",
}

func (s Shape) String() string { return shapeNames[s] }

// FallocMode is a fallocate(2) mode.
type FallocMode uint8

const (
	FallocDefault   FallocMode = iota + 1 // 0
	FallocKeepSize                        // FALLOC_FL_KEEP_SIZE
	FallocPunchHole                       // FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE
	FallocZeroRange                       // FALLOC_FL_ZERO_RANGE
)

var fallocNames = map[FallocMode]string{
	FallocDefault: "def", FallocKeepSize: "keep", FallocPunchHole: "punch", FallocZeroRange: "zero",
}

func (m FallocMode) String() string { return fallocNames[m] }

// Sizes of the operations, in bytes. Setup writes SetupSize bytes into every file it creates so
// that overwrites, punches and truncations have data to act on.
const (
	SetupSize = 16384
	pageSize  = 4096
	appendLen = 4096
)

// XattrName is the one extended attribute the workloads set and remove.
const XattrName = "user.powercut"

// Op is one operation with every argument resolved (paths relative to the mount, offsets, fill
// byte), so that the executor and the script printer need no state.
type Op struct {
	Kind  Kind
	Path  string // the object (".": the mount root); for Link, Rename, Replace the source
	Path2 string // Link, Rename, Replace: the destination; Symlink: the link (Path is the target)
	Shape Shape
	Mode  FallocMode
	Off   int64
	Len   int64
	Fill  byte   // data operations write Len bytes of Fill
	Value string // SetXattr
}

// Action is one entry of a workload's program.
type Action struct {
	Op Op
	// Setup marks an operation inserted to satisfy the next core operation's preconditions.
	Setup bool
	// Step is the 1-based core step the action belongs to.
	Step int
	// Point is the 1-based number of the persistence point (0: not a persistence point).
	Point int
}

// Step is one core operation and the persistence point after it, as the ID names them.
type Step struct {
	Core    Op
	Persist Op
}

// Workload is a generated workload: its core steps and the program derived from them (setup
// operations, resolved offsets and fill bytes).
type Workload struct {
	Steps   []Step
	Actions []Action
}

// Points is the number of persistence points (Fsync, Fdatasync, Sync) of the workload.
func (w *Workload) Points() int {
	n := 0
	for _, a := range w.Actions {
		if a.Point > n {
			n = a.Point
		}
	}
	return n
}

// PointName is the mark the executor passes to the recorder after persistence point n returns.
func PointName(n int) string { return fmt.Sprintf("p%d", n) }

// ParsePointName is the inverse of PointName; ok is false for any other mark.
func ParsePointName(name string) (n int, ok bool) {
	if _, err := fmt.Sscanf(name, "p%d", &n); err != nil || PointName(n) != name || n < 1 {
		return 0, false
	}
	return n, true
}

// ErrBadID is returned (wrapped) by ParseID for a string that is not a workload ID.
var ErrBadID = errors.New("invalid workload ID")

// ID is the workload's stable name: the steps joined by "+", each step "core.persist", each
// operation its kind and arguments joined by "-", "/" in paths written "_", the root "root".
// Example: "link-A_foo-B_bar.fsync-B_bar+unlink-A_foo.sync". It contains only [a-zA-Z0-9_.+-],
// so it is safe in file names and shell words.
func (w *Workload) ID() string {
	parts := make([]string, len(w.Steps))
	for i, s := range w.Steps {
		parts[i] = opToken(s.Core) + "." + opToken(s.Persist)
	}
	return strings.Join(parts, "+")
}

func (w *Workload) String() string { return w.ID() }

func pathToken(p string) string {
	if p == "." {
		return "root"
	}
	return strings.ReplaceAll(p, "/", "_")
}

func tokenPath(t string) string {
	if t == "root" {
		return "."
	}
	return strings.ReplaceAll(t, "_", "/")
}

func opToken(o Op) string {
	f := []string{o.Kind.String()}
	switch o.Kind {
	case Creat, Mkdir, Unlink, SetXattr, RemoveXattr, Rmdir, Fsync, Fdatasync:
		f = append(f, pathToken(o.Path))
	case Write, DirectWrite, MmapWrite, Truncate:
		f = append(f, pathToken(o.Path), o.Shape.String())
	case Falloc:
		f = append(f, pathToken(o.Path), o.Mode.String(), o.Shape.String())
	case Link, Rename, Replace, Symlink:
		f = append(f, pathToken(o.Path), pathToken(o.Path2))
	}
	return strings.Join(f, "-")
}

func lookup[T comparable](m map[T]string, s string) (T, bool) {
	for k, v := range m {
		if v == s {
			return k, true
		}
	}
	var zero T
	return zero, false
}

func parseOp(tok string) (Op, error) {
	f := strings.Split(tok, "-")
	k, ok := lookup(kindNames, f[0])
	if !ok {
		return Op{}, fmt.Errorf("%w: unknown operation %q", ErrBadID, f[0])
	}
	want := map[Kind]int{Sync: 1, None: 1, Write: 3, DirectWrite: 3, MmapWrite: 3, Truncate: 3,
		Falloc: 4, Link: 3, Rename: 3, Replace: 3, Symlink: 3}[k]
	if want == 0 {
		want = 2
	}
	if len(f) != want {
		return Op{}, fmt.Errorf("%w: %q: want %d fields, have %d", ErrBadID, tok, want, len(f))
	}
	o := Op{Kind: k}
	if want > 1 {
		o.Path = tokenPath(f[1])
	}
	switch k {
	case Write, DirectWrite, MmapWrite, Truncate, Falloc:
		sh := f[len(f)-1]
		if o.Shape, ok = lookup(shapeNames, sh); !ok {
			return Op{}, fmt.Errorf("%w: %q: unknown shape %q", ErrBadID, tok, sh)
		}
		if k == Falloc {
			if o.Mode, ok = lookup(fallocNames, f[2]); !ok {
				return Op{}, fmt.Errorf("%w: %q: unknown fallocate mode %q", ErrBadID, tok, f[2])
			}
		}
	case Link, Rename, Replace, Symlink:
		o.Path2 = tokenPath(f[2])
	}
	return o, nil
}

// ParseID rebuilds the workload an ID names. The result equals the generated workload (same
// steps, same program); an ID that names no buildable workload is an error wrapping ErrBadID.
func ParseID(id string) (*Workload, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadID)
	}
	var steps []Step
	for _, st := range strings.Split(id, "+") {
		core, persist, ok := strings.Cut(st, ".")
		if !ok {
			return nil, fmt.Errorf("%w: step %q has no persistence point", ErrBadID, st)
		}
		c, err := parseOp(core)
		if err != nil {
			return nil, err
		}
		p, err := parseOp(persist)
		if err != nil {
			return nil, err
		}
		if c.Kind.IsPersist() || !p.Kind.IsPersist() {
			return nil, fmt.Errorf("%w: step %q: want a core operation then a persistence point", ErrBadID, st)
		}
		steps = append(steps, Step{Core: c, Persist: p})
	}
	if steps[len(steps)-1].Persist.Kind == None {
		return nil, fmt.Errorf("%w: the last persistence point is none", ErrBadID)
	}
	w, err := build(steps)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	if w.ID() != id {
		return nil, fmt.Errorf("%w: %q is not in canonical form (%q)", ErrBadID, id, w.ID())
	}
	return w, nil
}

// objType is what the generator's abstract state knows about a path.
type objType uint8

const (
	absent objType = iota
	tFile
	tDir
	tSymlink
)

type absObj struct {
	t     objType
	size  int64
	xattr bool
}

// absState is the generator's model of the tree: enough to insert setup operations and compute
// offsets. It deliberately does not model every kernel rule (a directory renamed into itself,
// rmdir of a non-empty directory): those workloads fail on tmpfs and the Validator drops them.
type absState map[string]absObj

func (s absState) clone() absState {
	c := make(absState, len(s))
	for k, v := range s {
		c[k] = v
	}
	return c
}

func parent(p string) string { return path.Dir(p) }

// builder accumulates a program while tracking the abstract state.
type builder struct {
	st      absState
	actions []Action
	step    int
	points  int
}

var errPrecondition = errors.New("precondition cannot be satisfied by setup")

func (b *builder) emit(o Op, setup bool) {
	if o.Kind == Write || o.Kind == DirectWrite || o.Kind == MmapWrite {
		// One fill byte per action, from its position: every write is distinguishable in the data.
		o.Fill = byte('a' + len(b.actions)%26)
	}
	if o.Kind == SetXattr {
		o.Value = fmt.Sprintf("v%d", len(b.actions))
	}
	a := Action{Op: o, Setup: setup, Step: b.step}
	if o.Kind == Fsync || o.Kind == Fdatasync || o.Kind == Sync {
		b.points++
		a.Point = b.points
	}
	b.actions = append(b.actions, a)
	b.apply(a.Op)
}

// apply updates the abstract state with the effect of o.
func (b *builder) apply(o Op) {
	st := b.st
	switch o.Kind {
	case Creat:
		st[o.Path] = absObj{t: tFile}
	case Mkdir:
		st[o.Path] = absObj{t: tDir}
	case Write, DirectWrite, MmapWrite:
		ob := st[o.Path]
		ob.size = max(ob.size, o.Off+o.Len)
		st[o.Path] = ob
	case Falloc:
		ob := st[o.Path]
		if o.Mode == FallocDefault || o.Mode == FallocZeroRange {
			ob.size = max(ob.size, o.Off+o.Len)
		}
		st[o.Path] = ob
	case Truncate:
		ob := st[o.Path]
		ob.size = o.Off
		st[o.Path] = ob
	case Link:
		st[o.Path2] = st[o.Path]
	case Unlink, Rmdir:
		delete(st, o.Path)
	case Rename, Replace:
		for p, ob := range st {
			if p == o.Path || strings.HasPrefix(p, o.Path+"/") {
				delete(st, p)
				st[o.Path2+strings.TrimPrefix(p, o.Path)] = ob
			}
		}
	case Symlink:
		st[o.Path2] = absObj{t: tSymlink}
	case SetXattr:
		ob := st[o.Path]
		ob.xattr = true
		st[o.Path] = ob
	case RemoveXattr:
		ob := st[o.Path]
		ob.xattr = false
		st[o.Path] = ob
	}
}

// needDir makes sure directory d exists (creating its missing ancestors), or fails if a
// non-directory is in the way.
func (b *builder) needDir(d string) error {
	if d == "." {
		return nil
	}
	switch b.st[d].t {
	case tDir:
		return nil
	case absent:
		if err := b.needDir(parent(d)); err != nil {
			return err
		}
		b.emit(Op{Kind: Mkdir, Path: d}, true)
		return nil
	}
	return fmt.Errorf("%w: %s is not a directory", errPrecondition, d)
}

// needFile makes sure f is a regular file holding SetupSize bytes if it had to be created.
func (b *builder) needFile(f string) error {
	switch b.st[f].t {
	case tFile:
		return nil
	case absent:
		if err := b.needDir(parent(f)); err != nil {
			return err
		}
		b.emit(Op{Kind: Creat, Path: f}, true)
		b.emit(Op{Kind: Write, Path: f, Off: 0, Len: SetupSize}, true)
		return nil
	}
	return fmt.Errorf("%w: %s is not a regular file", errPrecondition, f)
}

func (b *builder) needAbsent(p string) error {
	if b.st[p].t != absent {
		return fmt.Errorf("%w: %s exists", errPrecondition, p)
	}
	return b.needDir(parent(p))
}

// resolve sets the offsets of a data operation from the file's current size.
func resolve(o *Op, size int64) {
	switch o.Shape {
	case Append:
		o.Off, o.Len = size, appendLen
		if o.Kind == DirectWrite {
			o.Off = (size + pageSize - 1) / pageSize * pageSize
		}
	case Overwrite:
		o.Off, o.Len = 4096, 4096
	case OverwriteU:
		o.Off, o.Len = 5000, 3000
	case Extend:
		o.Off, o.Len = 12288, 8192
	case Shrink:
		o.Off = 8192
	case ShrinkU:
		o.Off = 5000
	case Grow:
		o.Off = 24576
	}
}

// core inserts the setup o needs, then o itself.
func (b *builder) core(o Op) error {
	var err error
	switch o.Kind {
	case Creat, Mkdir:
		err = b.needAbsent(o.Path)
	case Write, DirectWrite, MmapWrite, Falloc, Truncate, SetXattr, Unlink:
		err = b.needFile(o.Path)
	case RemoveXattr:
		if err = b.needFile(o.Path); err == nil && !b.st[o.Path].xattr {
			b.emit(Op{Kind: SetXattr, Path: o.Path}, true)
		}
	case Link, Rename:
		if b.st[o.Path].t == tDir && o.Kind == Rename {
			if err = b.needAbsent(o.Path2); err == nil {
				// An empty directory's rename tells little: give it a file to carry along.
				err = b.needFile(o.Path + "/foo")
			}
			break
		}
		if err = b.needFile(o.Path); err == nil {
			err = b.needAbsent(o.Path2)
		}
	case Replace:
		if err = b.needFile(o.Path); err == nil {
			err = b.needFile(o.Path2)
		}
	case Symlink:
		err = b.needAbsent(o.Path2)
	case Rmdir:
		err = b.needDir(o.Path)
	default:
		err = fmt.Errorf("%v is not a core operation", o.Kind)
	}
	if err != nil {
		return err
	}
	resolve(&o, b.st[o.Path].size)
	b.emit(o, false)
	return nil
}

// isDirPath reports whether p is one of the file set's directories.
func isDirPath(p string) bool { return p == "A" || p == "B" || p == "A/C" }

// build derives the program of a workload from its steps.
func build(steps []Step) (*Workload, error) {
	b := &builder{st: absState{}}
	for i, s := range steps {
		b.step = i + 1
		if s.Core.Kind == Rename && isDirPath(s.Core.Path) && b.st[s.Core.Path].t == absent {
			// A directory rename's source is set up as a directory, not as a file.
			if err := b.needDir(s.Core.Path); err != nil {
				return nil, err
			}
		}
		if err := b.core(s.Core); err != nil {
			return nil, fmt.Errorf("step %d (%s): %w", i+1, opToken(s.Core), err)
		}
		p := s.Persist
		switch p.Kind {
		case Fsync:
			if b.st[p.Path].t != tFile && b.st[p.Path].t != tDir && p.Path != "." {
				return nil, fmt.Errorf("step %d: %w: fsync of %s, which is not a file or directory", i+1, errPrecondition, p.Path)
			}
		case Fdatasync:
			if b.st[p.Path].t != tFile {
				return nil, fmt.Errorf("step %d: %w: fdatasync of %s, which is not a file", i+1, errPrecondition, p.Path)
			}
		}
		if p.Kind != None {
			b.emit(Op{Kind: p.Kind, Path: p.Path}, false)
		}
	}
	return &Workload{Steps: steps, Actions: b.actions}, nil
}
