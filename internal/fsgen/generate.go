package fsgen

import (
	"fmt"
	"iter"
)

// Options bound the generated space.
type Options struct {
	// Nested adds the directory A/C and its files A/C/foo, A/C/bar to the file set.
	Nested bool
}

// MaxSeq is the longest sequence Generate accepts.
const MaxSeq = 3

// FileSet returns the directories and files the workloads act on, in generation order.
func FileSet(o Options) (dirs, files []string) {
	dirs = []string{"A", "B"}
	files = []string{"A/foo", "A/bar", "B/foo", "B/bar"}
	if o.Nested {
		dirs = append(dirs, "A/C")
		files = append(files, "A/C/foo", "A/C/bar")
	}
	return dirs, files
}

// CoreOps returns every core operation of the file set, unresolved (no offsets), in the
// deterministic generation order.
func CoreOps(o Options) []Op {
	dirs, files := FileSet(o)
	var ops []Op
	add := func(op Op) { ops = append(ops, op) }
	for _, f := range files {
		add(Op{Kind: Creat, Path: f})
	}
	for _, d := range dirs {
		add(Op{Kind: Mkdir, Path: d})
	}
	for _, f := range files {
		for _, s := range []Shape{Append, Overwrite, OverwriteU, Extend} {
			add(Op{Kind: Write, Path: f, Shape: s})
		}
	}
	for _, f := range files {
		for _, s := range []Shape{Append, Overwrite} {
			add(Op{Kind: DirectWrite, Path: f, Shape: s})
		}
	}
	for _, f := range files {
		for _, s := range []Shape{Overwrite, OverwriteU} {
			add(Op{Kind: MmapWrite, Path: f, Shape: s})
		}
	}
	for _, f := range files {
		for _, m := range []FallocMode{FallocDefault, FallocKeepSize, FallocPunchHole, FallocZeroRange} {
			for _, s := range []Shape{Append, OverwriteU, Extend} {
				add(Op{Kind: Falloc, Path: f, Mode: m, Shape: s})
			}
		}
	}
	for _, f := range files {
		for _, s := range []Shape{Shrink, ShrinkU, Grow} {
			add(Op{Kind: Truncate, Path: f, Shape: s})
		}
	}
	pairs := func(k Kind, set []string) {
		for _, a := range set {
			for _, b := range set {
				if a != b {
					add(Op{Kind: k, Path: a, Path2: b})
				}
			}
		}
	}
	pairs(Link, files)
	for _, f := range files {
		add(Op{Kind: Unlink, Path: f})
	}
	pairs(Rename, files)
	pairs(Replace, files)
	pairs(Rename, dirs)
	pairs(Symlink, files)
	for _, f := range files {
		add(Op{Kind: SetXattr, Path: f})
	}
	for _, f := range files {
		add(Op{Kind: RemoveXattr, Path: f})
	}
	for _, d := range dirs {
		add(Op{Kind: Rmdir, Path: d})
	}
	return ops
}

// persistCandidates lists the persistence points worth placing after o (B3's "range of used
// files": the objects o touched and their parents), before filtering by what exists.
func persistCandidates(o Op) []Op {
	fs := func(p string) Op { return Op{Kind: Fsync, Path: p} }
	fd := func(p string) Op { return Op{Kind: Fdatasync, Path: p} }
	switch o.Kind {
	case Creat:
		return []Op{fs(o.Path), fd(o.Path), fs(parent(o.Path))}
	case Mkdir:
		return []Op{fs(o.Path), fs(parent(o.Path))}
	case Write, DirectWrite, MmapWrite, Falloc, Truncate, SetXattr, RemoveXattr:
		return []Op{fs(o.Path), fd(o.Path)}
	case Link:
		return []Op{fs(o.Path), fs(o.Path2), fs(parent(o.Path)), fs(parent(o.Path2))}
	case Rename, Replace:
		return []Op{fs(o.Path2), fs(parent(o.Path)), fs(parent(o.Path2))}
	case Unlink, Rmdir:
		return []Op{fs(parent(o.Path))}
	case Symlink:
		return []Op{fs(parent(o.Path2))}
	}
	return nil
}

func (b *builder) clone() *builder {
	c := *b
	c.st = b.st.clone()
	c.actions = append([]Action(nil), b.actions...)
	return &c
}

// persistOptions returns the persistence points after o in the state b reached, deduplicated and
// in order: the candidates that exist, sync, then none unless the step is the last.
func persistOptions(b *builder, o Op, last bool) []Op {
	var out []Op
	seen := map[string]bool{}
	for _, p := range persistCandidates(o) {
		t := b.st[p.Path].t
		if p.Kind == Fsync && !(t == tFile || t == tDir || p.Path == ".") || p.Kind == Fdatasync && t != tFile {
			continue
		}
		if tok := opToken(p); !seen[tok] {
			seen[tok] = true
			out = append(out, p)
		}
	}
	out = append(out, Op{Kind: Sync})
	if !last {
		out = append(out, Op{Kind: None})
	}
	return out
}

// All yields the workloads of seq core operations in the deterministic generation order: core
// operations in CoreOps order, for each the persistence points in persistOptions order, the
// first step varying slowest. Combinations whose preconditions the setup cannot satisfy (creat of
// a file an earlier step created, ...) are skipped; the rest still needs the tmpfs Validator.
func All(seq int, o Options) iter.Seq[*Workload] {
	ops := CoreOps(o)
	return func(yield func(*Workload) bool) {
		if seq < 1 || seq > MaxSeq {
			return
		}
		var rec func(b *builder, steps []Step) bool
		rec = func(b *builder, steps []Step) bool {
			depth := len(steps)
			for _, op := range ops {
				nb := b.clone()
				nb.step = depth + 1
				if op.Kind == Rename && isDirPath(op.Path) && nb.st[op.Path].t == absent {
					if nb.needDir(op.Path) != nil {
						continue
					}
				}
				if nb.core(op) != nil {
					continue
				}
				last := depth+1 == seq
				for _, p := range persistOptions(nb, op, last) {
					pb := nb.clone()
					if p.Kind != None {
						pb.emit(p, false)
					}
					st := append(append([]Step(nil), steps...), Step{Core: op, Persist: p})
					if last {
						if !yield(&Workload{Steps: st, Actions: pb.actions}) {
							return false
						}
					} else if !rec(pb, st) {
						return false
					}
				}
			}
			return true
		}
		rec(&builder{st: absState{}}, nil)
	}
}

// Generate returns All(seq, o) as a slice. Mind the sizes: seq-2 and seq-3 are large; iterate
// with All to stream them.
func Generate(seq int, o Options) ([]*Workload, error) {
	if seq < 1 || seq > MaxSeq {
		return nil, fmt.Errorf("fsgen: sequence length %d out of range 1..%d", seq, MaxSeq)
	}
	var ws []*Workload
	for w := range All(seq, o) {
		ws = append(ws, w)
	}
	return ws, nil
}

// Count returns the number of workloads All(seq, o) yields.
func Count(seq int, o Options) int {
	n := 0
	for range All(seq, o) {
		n++
	}
	return n
}
