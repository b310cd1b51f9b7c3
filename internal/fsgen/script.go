package fsgen

import (
	"fmt"
	"strings"
)

// Command returns the shell command that issues o's syscalls: coreutils for the namespace
// operations, xfs_io (xfsprogs) for the data operations and the persistence points because it
// issues exactly one pwrite/fallocate/fsync per command, setfattr (attr) for extended attributes.
func Command(o Op) string {
	q := shellQuote
	xio := func(flags, cmd, p string) string {
		if flags != "" {
			flags += " "
		}
		return fmt.Sprintf("xfs_io %s-c %s %s", flags, q(cmd), q(p))
	}
	switch o.Kind {
	case Creat:
		return ": > " + q(o.Path)
	case Mkdir:
		return "mkdir " + q(o.Path)
	case Write:
		return xio("", fmt.Sprintf("pwrite -q -S 0x%02x %d %d", o.Fill, o.Off, o.Len), o.Path)
	case DirectWrite:
		return xio("-d", fmt.Sprintf("pwrite -q -S 0x%02x %d %d", o.Fill, o.Off, o.Len), o.Path)
	case MmapWrite:
		start := o.Off &^ (pageSize - 1)
		n := o.Off + o.Len - start
		return fmt.Sprintf("xfs_io -c %s -c %s -c %s %s",
			q(fmt.Sprintf("mmap -rw %d %d", start, n)),
			q(fmt.Sprintf("mwrite -S 0x%02x %d %d", o.Fill, o.Off, o.Len)),
			q(fmt.Sprintf("msync -s %d %d", start, n)), q(o.Path))
	case Falloc:
		cmd := map[FallocMode]string{FallocDefault: "falloc", FallocKeepSize: "falloc -k",
			FallocPunchHole: "fpunch", FallocZeroRange: "fzero"}[o.Mode]
		return xio("", fmt.Sprintf("%s %d %d", cmd, o.Off, o.Len), o.Path)
	case Truncate:
		return fmt.Sprintf("truncate -s %d %s", o.Off, q(o.Path))
	case Link:
		return fmt.Sprintf("ln %s %s", q(o.Path), q(o.Path2))
	case Unlink:
		return "unlink " + q(o.Path)
	case Rename, Replace:
		return fmt.Sprintf("mv -T %s %s", q(o.Path), q(o.Path2))
	case Symlink:
		return fmt.Sprintf("ln -s %s %s", q(symlinkTarget(o.Path, o.Path2)), q(o.Path2))
	case SetXattr:
		return fmt.Sprintf("setfattr -n %s -v %s %s", XattrName, q(o.Value), q(o.Path))
	case RemoveXattr:
		return fmt.Sprintf("setfattr -x %s %s", XattrName, q(o.Path))
	case Rmdir:
		return "rmdir " + q(o.Path)
	case Fsync:
		return xio("-r", "fsync", o.Path)
	case Fdatasync:
		return xio("-r", "fdatasync", o.Path)
	case Sync:
		return "sync"
	}
	return ": # " + o.Kind.String()
}

// Syscall describes o as the syscalls the executor issues.
func Syscall(o Op) string {
	switch o.Kind {
	case Creat:
		return fmt.Sprintf("creat(%q, 0644)", o.Path)
	case Mkdir:
		return fmt.Sprintf("mkdir(%q, 0755)", o.Path)
	case Write:
		return fmt.Sprintf("pwrite(%q, %d bytes of 0x%02x, off %d)", o.Path, o.Len, o.Fill, o.Off)
	case DirectWrite:
		return fmt.Sprintf("open(%q, O_DIRECT); pwrite(%d bytes of 0x%02x, off %d)", o.Path, o.Len, o.Fill, o.Off)
	case MmapWrite:
		return fmt.Sprintf("mmap(%q); store %d bytes of 0x%02x at %d; msync(MS_SYNC)", o.Path, o.Len, o.Fill, o.Off)
	case Falloc:
		m := map[FallocMode]string{FallocDefault: "0", FallocKeepSize: "KEEP_SIZE",
			FallocPunchHole: "PUNCH_HOLE|KEEP_SIZE", FallocZeroRange: "ZERO_RANGE"}[o.Mode]
		return fmt.Sprintf("fallocate(%q, %s, off %d, len %d)", o.Path, m, o.Off, o.Len)
	case Truncate:
		return fmt.Sprintf("truncate(%q, %d)", o.Path, o.Off)
	case Link, Rename, Replace:
		k := map[Kind]string{Link: "link", Rename: "rename", Replace: "rename"}[o.Kind]
		return fmt.Sprintf("%s(%q, %q)", k, o.Path, o.Path2)
	case Symlink:
		return fmt.Sprintf("symlink(%q, %q)", symlinkTarget(o.Path, o.Path2), o.Path2)
	case SetXattr:
		return fmt.Sprintf("fsetxattr(%q, %q, %q)", o.Path, XattrName, o.Value)
	case RemoveXattr:
		return fmt.Sprintf("fremovexattr(%q, %q)", o.Path, XattrName)
	case Rmdir:
		return fmt.Sprintf("rmdir(%q)", o.Path)
	case Fsync, Fdatasync:
		return fmt.Sprintf("%s(%q)", o.Kind, o.Path)
	case Sync:
		return "sync()"
	}
	return o.Kind.String()
}

// Script prints w as a shell script that issues the same syscalls as Run, in the same order, in
// the directory named by $POWERCUT_MNT (the current directory if unset), with `powercut mark`
// after each persistence point (set POWERCUT_MARK=: to run it without a recorder).
func (w *Workload) Script() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# powercut generated workload %s\n", w.ID())
	b.WriteString("# needs coreutils, xfs_io (xfsprogs) and setfattr (attr)\nset -e\ncd \"${POWERCUT_MNT:-.}\"\n")
	b.WriteString("mark=${POWERCUT_MARK:-powercut mark}\n")
	step := 0
	for _, a := range w.Actions {
		if a.Step != step {
			step = a.Step
			fmt.Fprintf(&b, "\n# step %d: %s.%s\n", step, opToken(w.Steps[step-1].Core), opToken(w.Steps[step-1].Persist))
		}
		cmd := Command(a.Op)
		tag := ""
		if a.Setup {
			tag = "setup: "
		}
		fmt.Fprintf(&b, "%-64s # %s%s\n", cmd, tag, Syscall(a.Op))
		if a.Point > 0 {
			fmt.Fprintf(&b, "$mark %s\n", PointName(a.Point))
		}
	}
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
