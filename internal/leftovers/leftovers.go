// Package leftovers makes what a powercut process creates in the file system (temporary
// directories, FUSE mounts, loop devices, file systems mounted from crash states, the processes
// of checks) attributable to that process, and removes what a dead process left behind.
//
// Why: a powercut killed with SIGKILL (or by the OOM killer) runs no deferred release. Its FUSE
// mounts then answer "Transport endpoint is not connected", its loop devices stay bound to files
// on them, and its mounts and directories stay in /tmp. Nothing in those names says who made
// them, and another powercut may be running right now with resources that look the same.
//
// How: every process that creates such resources puts its temporary directories inside one
// directory of its own, TempDir/powercut-<pid>-<random> (Dir, MkdirTemp), and holds an exclusive
// flock on the owner.lock file inside it for its whole life. The kernel drops the lock when the
// process dies, whatever killed it, so "lock free" is exactly "owner dead"; the lock file also
// holds the owner's start time, so a reused PID is not mistaken for the owner. Sweep removes the
// resources of directories whose owner is dead and nothing else: mounts whose mount point or
// loop device's backing file lies inside such a directory, those loop devices, the processes
// still referring to it (orphaned checks, by argv, environment or working directory), and the
// directory. FUSE mounts of powercut's own file systems (fuse.powercut*) that answer ENOTCONN
// are dead by definition (their server ran inside the dead process) and are removed with what
// depends on them, wherever they are.
package leftovers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockName is the owner's lock file inside its directory.
const LockName = "owner.lock"

// Action is one thing Sweep removed (or, in a dry run, would remove).
type Action struct {
	// Owner is the PID of the dead process the thing belonged to (0: unknown, e.g. a dead FUSE
	// mount outside any owner directory).
	Owner int `json:"owner_pid,omitempty"`
	// Kind is "process", "mount", "fuse", "loop" or "dir".
	Kind   string `json:"kind"`
	Path   string `json:"path"`
	Detail string `json:"detail,omitempty"`
	// Err is set when the removal failed.
	Err string `json:"error,omitempty"`
}

func (a Action) String() string {
	verb := map[string]string{"process": "killed process", "mount": "unmounted", "fuse": "unmounted FUSE", "loop": "detached loop device", "dir": "removed directory"}[a.Kind]
	s := verb + " " + a.Path
	if a.Detail != "" {
		s += " (" + a.Detail + ")"
	}
	if a.Owner != 0 {
		s += fmt.Sprintf(", left by dead powercut %d", a.Owner)
	}
	if a.Err != "" {
		s += ": FAILED: " + a.Err
	}
	return s
}

var (
	mu      sync.Mutex
	ownDir  string
	ownLock *os.File
)

var rootRE = regexp.MustCompile(`^powercut-([0-9]+)-`)

// Dir returns this process's own directory (created and locked on first use), in which its
// temporary directories belong. If it cannot be created, os.TempDir() is returned: the run
// works, only its leftovers would not be attributable.
func Dir() string {
	mu.Lock()
	defer mu.Unlock()
	if ownDir != "" {
		return ownDir
	}
	d, err := os.MkdirTemp("", fmt.Sprintf("powercut-%d-", os.Getpid()))
	if err != nil {
		return os.TempDir()
	}
	f, err := os.OpenFile(filepath.Join(d, LockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err == nil {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			_, err = f.WriteString(startTime(os.Getpid()) + "\n")
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(d)
		return os.TempDir()
	}
	ownDir, ownLock = d, f
	return d
}

// MkdirTemp is os.MkdirTemp in this process's own directory (Dir).
func MkdirTemp(pattern string) (string, error) { return os.MkdirTemp(Dir(), pattern) }

// Close releases whatever is still left in this process's own directory (a mount that was busy,
// a check's process that outlived its kill) and removes the directory. The CLI calls it when a
// command that created resources ends, normally or interrupted. Nothing is left to Close after
// correct releases; what it removes is returned.
func Close() []Action {
	mu.Lock()
	defer mu.Unlock()
	if ownDir == "" {
		return nil
	}
	acts := clean([]owned{{dir: ownDir, pid: os.Getpid()}}, nil, false, false)
	// The directory itself and its lock file are not news.
	var out []Action
	for _, a := range acts {
		if !(a.Kind == "dir" && a.Path == ownDir && a.Err == "") {
			out = append(out, a)
		}
	}
	ownLock.Close()
	ownDir, ownLock = "", nil
	return out
}

// owned is an owner directory and its (dead) owner.
type owned struct {
	dir  string
	pid  int
	lock *os.File
}

// Sweep removes (with dryRun: lists) the leftovers of dead powercut processes in os.TempDir()
// and the dead powercut FUSE mounts anywhere. Directories whose owner is alive (this process
// included) are never touched.
func Sweep(dryRun bool) ([]Action, error) {
	tmp := os.TempDir()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", tmp, err)
	}
	var dead []owned
	var live []string
	for _, e := range ents {
		m := rootRE.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		dir := filepath.Join(tmp, e.Name())
		if lock, ok := deadOwner(dir, pid); ok {
			dead = append(dead, owned{dir: dir, pid: pid, lock: lock})
		} else {
			live = append(live, dir)
		}
	}
	defer func() {
		for _, o := range dead {
			if o.lock != nil {
				o.lock.Close()
			}
		}
	}()
	return clean(dead, live, true, dryRun), nil
}

// deadOwner reports whether dir's owner is dead; the returned lock (held) keeps a concurrent
// sweep or a new owner away while dir is cleaned.
func deadOwner(dir string, pid int) (*os.File, bool) {
	if pid == os.Getpid() {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(dir, LockName), os.O_RDWR, 0)
	if err != nil {
		// No lock file yet: the owner may be between mkdir and creating it.
		return nil, !pidAlive(pid)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LockName))
	st := strings.TrimSpace(string(b))
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		// Held: the owner lives, unless it is a zombie still closing its files (one stuck on
		// a FUSE mount of its own holds its lock for ever); then it is dead, and cleaning its
		// directory (aborting that mount) is what lets it finish.
		return nil, st != "" && startTime(pid) == st && !pidAlive(pid)
	}
	if st == "" {
		// The owner created the file and has not locked it yet, or died in between.
		if pidAlive(pid) {
			f.Close()
			return nil, false
		}
		return f, true
	}
	if pidAlive(pid) && startTime(pid) == st {
		// Unreachable with a live owner (it holds the lock); conservative all the same.
		f.Close()
		return nil, false
	}
	return f, true
}

// pidAlive reports whether pid is a process that is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// startTime is field 22 of /proc/PID/stat (clock ticks since boot): with the PID, it names one
// process for the life of the system.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// mount is one line of /proc/self/mountinfo; dev is its device number (major:minor): for a FUSE
// mount, the minor names its connection in the fusectl file system.
type mount struct{ point, fstype, source, dev string }

func mounts() []mount {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var ms []mount
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || len(f) < sep+3 {
			continue
		}
		ms = append(ms, mount{point: UnescapeMountinfo(f[4]), fstype: f[sep+1], source: UnescapeMountinfo(f[sep+2]), dev: f[2]})
	}
	return ms
}

// loops maps each bound loop device (/dev/loopN) to its backing file.
func loops() map[string]string {
	out := map[string]string{}
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		back := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if back != "" {
			out["/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p)))] = back
		}
	}
	return out
}

func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if under(path, d) {
			return true
		}
	}
	return false
}

// isPowercutFUSE reports whether a mount is one of powercut's FUSE file systems (scratch files,
// the recorder).
func isPowercutFUSE(m mount) bool {
	return strings.HasPrefix(m.fstype, "fuse.powercut") || (strings.HasPrefix(m.fstype, "fuse") && strings.HasPrefix(m.source, "powercut"))
}

// answerWait is how long a sweep waits for a FUSE mount to answer a stat.
const answerWait = 2 * time.Second

// deadFUSE reports whether a FUSE mount's server is gone (a stat fails with ENOTCONN). A mount
// whose server is alive but does not answer (stopped, or stuck) would hold a stat for ever:
// after answerWait it counts as not dead, since nothing says whose it is (the stat is left
// behind, and ends with this process).
func deadFUSE(point string) bool {
	done := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		done <- unix.Stat(point, &st)
	}()
	select {
	case err := <-done:
		return errors.Is(err, unix.ENOTCONN)
	case <-time.After(answerWait):
		return false
	}
}

// fusectl is where the kernel's FUSE control file system is mounted (systemd mounts it at boot).
const fusectl = "/sys/fs/fuse/connections"

// abortFUSE aborts the connection of a FUSE mount whose owner is dead, through the control file
// system (mounted for the moment if it is not), before it is unmounted: every request waiting on
// it, and every later one, fails at once instead of waiting for a server that will never answer
// (a dead owner's server may be stuck in its own exit, closing a file on its own mount).
func abortFUSE(m mount) error {
	_, minor, ok := strings.Cut(m.dev, ":")
	if !ok {
		return fmt.Errorf("no device number for %s", m.point)
	}
	abort := filepath.Join(fusectl, minor, "abort")
	if !slices.ContainsFunc(mounts(), func(m mount) bool { return m.fstype == "fusectl" && m.point == fusectl }) {
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mount the FUSE control file system on %s: %w", fusectl, err)
		}
		defer unix.Unmount(fusectl, unix.MNT_DETACH)
	}
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort FUSE connection %s (%s): %w", minor, m.point, err)
	}
	return nil
}

// found is what a sweep found to remove, in the order it must go.
type found struct {
	procs    []proc
	fsMounts []mount           // file systems mounted from leftover files or on leftover devices
	devs     []string          // loop devices backed by leftover files
	back     map[string]string // loop device -> backing file
	fuses    []mount           // FUSE mounts inside dead directories, or dead powercut FUSE mounts
	dirs     []string
}

// find lists what the dead owner directories hold, and (with orphans) the dead powercut FUSE
// mounts outside any live directory. Nothing under a live directory is listed.
func find(deadDirs, live []string, orphans bool) found {
	var f found
	ms := mounts()
	// Dead prefixes: owner directories and dead FUSE mounts (outside live directories).
	prefixes := append([]string(nil), deadDirs...)
	for _, m := range ms {
		if !strings.HasPrefix(m.fstype, "fuse") || underAny(m.point, live) {
			continue
		}
		if underAny(m.point, deadDirs) || (orphans && isPowercutFUSE(m) && deadFUSE(m.point)) {
			f.fuses = append(f.fuses, m)
			prefixes = append(prefixes, m.point)
		}
	}
	f.back = loops()
	for dev, back := range f.back {
		if underAny(back, prefixes) && !underAny(back, live) {
			f.devs = append(f.devs, dev)
		}
	}
	sort.Strings(f.devs)
	for _, m := range ms {
		if strings.HasPrefix(m.fstype, "fuse") || underAny(m.point, live) {
			continue
		}
		if underAny(m.point, deadDirs) || contains(f.devs, m.source) {
			f.fsMounts = append(f.fsMounts, m)
		}
	}
	// Processes that refer to any of it: a check or workload orphaned by the owner's death.
	refs := append([]string(nil), prefixes...)
	for _, m := range f.fsMounts {
		refs = append(refs, m.point)
	}
	if len(refs) > 0 {
		f.procs = processesReferring(refs, live)
	}
	byDepth(f.fsMounts)
	byDepth(f.fuses)
	// Directories: the owner directories, and the powercut directories in TempDir that held a
	// dead FUSE mount or a removed mount outside any owner directory (their names carry no
	// owner; that their mount was dead or depended on a dead one says whose they were).
	f.dirs = append([]string(nil), deadDirs...)
	for _, m := range append(append([]mount(nil), f.fuses...), f.fsMounts...) {
		if underAny(m.point, deadDirs) {
			continue
		}
		if top := tempTop(m.point); top != "" && !contains(f.dirs, top) {
			f.dirs = append(f.dirs, top)
		}
	}
	return f
}

// byDepth orders mounts deepest first, so nested mounts go before what holds them.
func byDepth(ms []mount) {
	sort.SliceStable(ms, func(i, j int) bool { return strings.Count(ms[i].point, "/") > strings.Count(ms[j].point, "/") })
}

// clean removes what find lists, in the order the kernel allows: processes (they keep mounts
// busy), file systems on loop devices, loop devices (they keep their FUSE file open), FUSE
// mounts (their connections aborted first), directories.
func clean(dead []owned, live []string, orphans, dryRun bool) []Action {
	var acts []Action
	do := func(a Action, f func() error) {
		if !dryRun {
			if err := f(); err != nil {
				a.Err = err.Error()
			}
		}
		acts = append(acts, a)
	}
	owner := func(path string) int {
		for _, o := range dead {
			if under(path, o.dir) {
				return o.pid
			}
		}
		return 0
	}
	var deadDirs []string
	for _, o := range dead {
		deadDirs = append(deadDirs, o.dir)
	}
	f := find(deadDirs, live, orphans)
	for _, p := range f.procs {
		do(Action{Owner: owner(p.ref), Kind: "process", Path: strconv.Itoa(p.pid), Detail: p.cmd}, func() error { return killWait(p.pid) })
	}
	for _, m := range f.fsMounts {
		do(Action{Owner: owner(m.point), Kind: "mount", Path: m.point, Detail: m.fstype + " on " + m.source}, func() error { return unmount(m.point) })
	}
	for _, dev := range f.devs {
		do(Action{Owner: owner(f.back[dev]), Kind: "loop", Path: dev, Detail: "backed by " + f.back[dev]}, func() error { return detach(dev, f.back[dev]) })
	}
	for _, m := range f.fuses {
		ownerDead := underAny(m.point, deadDirs)
		detail := m.fstype
		if !ownerDead {
			detail += ", transport endpoint is not connected" // listed because a stat found it dead
		}
		do(Action{Owner: owner(m.point), Kind: "fuse", Path: m.point, Detail: detail}, func() error {
			if ownerDead {
				if err := abortFUSE(m); err != nil {
					return err
				}
			}
			return unmount(m.point)
		})
	}
	for _, d := range f.dirs {
		do(Action{Owner: owner(d), Kind: "dir", Path: d}, func() error { return removeDir(d) })
	}
	return acts
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// tempTop returns the directory directly in TempDir that holds path, if its name is powercut's.
func tempTop(path string) string {
	tmp := filepath.Clean(os.TempDir())
	rel, err := filepath.Rel(tmp, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return ""
	}
	top := strings.Split(rel, string(filepath.Separator))[0]
	if !strings.HasPrefix(top, "powercut-") {
		return ""
	}
	return filepath.Join(tmp, top)
}

// removeDir removes d unless a mount is still below it: RemoveAll would walk into a mounted file
// system and delete its files.
func removeDir(d string) error {
	for _, m := range mounts() {
		if under(m.point, d) {
			return fmt.Errorf("%s is still mounted", m.point)
		}
	}
	if err := os.RemoveAll(d); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// unmount unmounts point, retrying while busy for a moment, then lazily: nothing stays visible.
func unmount(point string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(point, 0); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if lerr := unix.Unmount(point, unix.MNT_DETACH); lerr != nil {
		return fmt.Errorf("umount %s: %v; lazy: %w", point, err, lerr)
	}
	return nil
}

// detach unbinds a loop device (LOOP_CLR_FD; a device still open is cleared by the kernel at its
// last close) and waits until it no longer serves back.
func detach(dev, back string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
			return nil
		}
		return fmt.Errorf("open %s: %w", dev, err)
	}
	err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
	unix.Close(fd)
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
	}
	sys := "/sys/block/" + strings.TrimPrefix(dev, "/dev/") + "/loop/backing_file"
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(sys)
		if err != nil || strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)") != back {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s still serves %s", dev, back)
}

// proc is a process that refers to a leftover path.
type proc struct {
	pid      int
	cmd, ref string
}

// processesReferring returns the processes (other than this one) whose command line or
// environment names a path under one of refs, and none under a live directory: the owner's
// checks, workloads and their children get the paths of its mounts and files that way
// (POWERCUT_MNT, POWERCUT_CONTROL, fsck's argument).
func processesReferring(refs, live []string) []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		base := "/proc/" + e.Name()
		cmdline, _ := os.ReadFile(base + "/cmdline")
		environ, _ := os.ReadFile(base + "/environ")
		fields := strings.Split(string(cmdline), "\x00")
		for _, kv := range strings.Split(string(environ), "\x00") {
			// Not the working directory (PWD, the cwd link): a user's shell that looks into a
			// leftover directory is not the dead owner's.
			if k, v, ok := strings.Cut(kv, "="); ok && k != "PWD" && k != "OLDPWD" {
				fields = append(fields, v)
			}
		}
		ref := ""
		skip := false
		for _, f := range fields {
			for _, part := range strings.Split(f, ":") {
				if part == "" || !strings.HasPrefix(part, "/") {
					continue
				}
				if underAny(part, live) {
					skip = true
				}
				for _, r := range refs {
					if under(part, r) && ref == "" {
						ref = part
					}
				}
			}
		}
		if ref != "" && !skip {
			out = append(out, proc{pid: pid, cmd: strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")), ref: ref})
		}
	}
	return out
}

// killWait kills pid and waits (up to 2 s) until it is gone or a zombie.
func killWait(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for i := 0; i < 100 && pidAlive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if pidAlive(pid) {
		return fmt.Errorf("process %d still alive", pid)
	}
	return nil
}

// UnescapeMountinfo undoes the octal escapes of /proc/self/mountinfo (space, tab, newline,
// backslash).
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
