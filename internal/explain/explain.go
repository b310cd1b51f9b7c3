// Package explain says what a byte range of a file-system image holds — a file's data (with its
// path), a directory, the journal or log, an inode table, a bitmap, a superblock, a btree block —
// so that a deviating block operation of a minimal crash state reads as "the journal commit
// block" or "data of /d/b.bin" instead of "sector 2048". It asks the file systems' own read-only
// tools: debugfs and dumpe2fs (ext4), xfs_db (xfs), btrfs inspect-internal (btrfs).
package explain

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrUnsupported: no explainer for this file system.
var ErrUnsupported = errors.New("no explainer for this file system")

// Where describes what bytes [off, off+n) of image (a file-system image of type fs) hold, one
// phrase per distinct structure, joined by "; ".
func Where(ctx context.Context, fs, image string, off, n int64) (string, error) {
	var parts []string
	var err error
	switch fs {
	case "ext4", "ext3", "ext2":
		parts, err = ext4(ctx, image, off, n)
	case "xfs":
		parts, err = xfs(ctx, image, off, n)
	case "btrfs":
		parts, err = btrfs(ctx, image, off, n)
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupported, fs)
	}
	if err != nil {
		return "", err
	}
	return strings.Join(dedup(parts), "; "), nil
}

func dedup(xs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// maxBlocks bounds the blocks looked up per range (a long write is described by its first ones).
const maxBlocks = 8

// ---- ext4 ----

type span struct {
	lo, hi int64 // blocks, inclusive
	what   string
	first  int64 // first inode of an inode table span
}

var (
	reBlockSize = regexp.MustCompile(`(?m)^Block size:\s+(\d+)`)
	reIPG       = regexp.MustCompile(`(?m)^Inodes per group:\s+(\d+)`)
	reInodeSize = regexp.MustCompile(`(?m)^Inode size:\s+(\d+)`)
	reGroup     = regexp.MustCompile(`^Group (\d+):`)
	reRange     = regexp.MustCompile(`(\d+)(?:-(\d+))?`)
)

func ext4(ctx context.Context, image string, off, n int64) ([]string, error) {
	out, err := run(ctx, "dumpe2fs", image)
	if err != nil {
		return nil, err
	}
	bs := atoi(reBlockSize.FindStringSubmatch(out))
	ipg := atoi(reIPG.FindStringSubmatch(out))
	isz := atoi(reInodeSize.FindStringSubmatch(out))
	if bs == 0 {
		return nil, fmt.Errorf("dumpe2fs %s: no block size", image)
	}
	spans := ext4Layout(out, ipg, bs, isz)
	journal, _ := ext4InodeBlocks(ctx, image, "<8>")
	var parts, files []string
	var fileBlocks []int64
	for b := off / bs; b <= (off+n-1)/bs && b < off/bs+maxBlocks; b++ {
		if b == 0 && off < 1024+1024 && bs > 1024 {
			parts = append(parts, "ext4 superblock (block 0)")
			continue
		}
		if k, ok := journal[b]; ok {
			parts = append(parts, fmt.Sprintf("ext4 journal (journal block %d)", k))
			continue
		}
		if s := findSpan(spans, b); s != nil {
			if s.first > 0 {
				per := bs / isz
				lo := s.first + (b-s.lo)*per
				parts = append(parts, fmt.Sprintf("ext4 %s (inodes %d-%d)", s.what, lo, lo+per-1))
			} else {
				parts = append(parts, "ext4 "+s.what)
			}
			continue
		}
		fileBlocks = append(fileBlocks, b)
	}
	if len(fileBlocks) > 0 {
		files, err = ext4Files(ctx, image, fileBlocks)
		if err != nil {
			return nil, err
		}
		parts = append(parts, files...)
	}
	return parts, nil
}

func atoi(m []string) int64 {
	if len(m) < 2 {
		return 0
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// ext4Layout parses dumpe2fs's per-group metadata locations.
func ext4Layout(out string, ipg, bs, isz int64) []span {
	var spans []span
	group := int64(-1)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := reGroup.FindStringSubmatch(line); m != nil {
			group, _ = strconv.ParseInt(m[1], 10, 64)
			continue
		}
		if group < 0 {
			continue
		}
		for _, field := range strings.Split(line, ", ") {
			for _, kind := range []string{"Primary superblock at ", "Backup superblock at ", "Group descriptors at ", "Reserved GDT blocks at ", "Block bitmap at ", "Inode bitmap at ", "Inode table at "} {
				if !strings.HasPrefix(field, kind) {
					continue
				}
				m := reRange.FindStringSubmatch(strings.TrimPrefix(field, kind))
				lo, _ := strconv.ParseInt(m[1], 10, 64)
				hi := lo
				if m[2] != "" {
					hi, _ = strconv.ParseInt(m[2], 10, 64)
				}
				what := strings.ToLower(strings.TrimSuffix(kind, " at "))
				s := span{lo: lo, hi: hi, what: fmt.Sprintf("%s of group %d", what, group)}
				if kind == "Inode table at " && ipg > 0 && isz > 0 {
					s.first = group*ipg + 1
				}
				spans = append(spans, s)
			}
		}
	}
	return spans
}

func findSpan(spans []span, b int64) *span {
	for i := range spans {
		if spans[i].lo <= b && b <= spans[i].hi {
			return &spans[i]
		}
	}
	return nil
}

// ext4InodeBlocks maps the blocks of an inode (debugfs spec, e.g. "<8>") to their index.
func ext4InodeBlocks(ctx context.Context, image, ino string) (map[int64]int64, error) {
	out, err := run(ctx, "debugfs", "-R", "blocks "+ino, image)
	if err != nil {
		return nil, err
	}
	m := map[int64]int64{}
	for k, f := range strings.Fields(out) {
		if v, err := strconv.ParseInt(f, 10, 64); err == nil {
			m[v] = int64(k)
		}
	}
	return m, nil
}

// ext4Files names the files owning data blocks (icheck, then ncheck).
func ext4Files(ctx context.Context, image string, blocks []int64) ([]string, error) {
	args := "icheck"
	for _, b := range blocks {
		args += " " + strconv.FormatInt(b, 10)
	}
	out, err := run(ctx, "debugfs", "-R", args, image)
	if err != nil {
		return nil, err
	}
	inodes := map[string][]int64{}
	var order []string
	var free []int64
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "Block" {
			continue
		}
		b, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(f[1], "<") {
			free = append(free, b)
			continue
		}
		if inodes[f[1]] == nil {
			order = append(order, f[1])
		}
		inodes[f[1]] = append(inodes[f[1]], b)
	}
	var parts []string
	if len(order) > 0 {
		out, err = run(ctx, "debugfs", "-R", "ncheck "+strings.Join(order, " "), image)
		if err != nil {
			return nil, err
		}
		names := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			f := strings.SplitN(strings.TrimSpace(line), "\t", 2)
			if len(f) == 2 && f[0] != "Inode" {
				names[f[0]] = f[1]
			}
		}
		for _, ino := range order {
			name := names[ino]
			if name == "" {
				name = "an unnamed inode"
			}
			parts = append(parts, fmt.Sprintf("ext4 data of %s (inode %s, block %s)", name, ino, joinBlocks(inodes[ino])))
		}
	}
	if len(free) > 0 {
		parts = append(parts, fmt.Sprintf("ext4 block %s: not in use by any inode in this image", joinBlocks(free)))
	}
	return parts, nil
}

func joinBlocks(bs []int64) string {
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	var s []string
	for _, b := range bs {
		s = append(s, strconv.FormatInt(b, 10))
	}
	return strings.Join(s, ",")
}

// ---- xfs ----

var reXfsUse = regexp.MustCompile(`block (\d+) \([^)]*\) type (\S+)(?: inode (\d+))?(?: (\S+))?`)

func xfs(ctx context.Context, image string, off, n int64) ([]string, error) {
	var args []string
	args = append(args, "-r", "-c", "blockget -n")
	var blocks []int64
	for d := off / 512; d <= (off+n-1)/512 && len(blocks) < maxBlocks; d += 8 {
		blocks = append(blocks, d)
	}
	for _, d := range blocks {
		args = append(args, "-c", fmt.Sprintf("daddr %d", d), "-c", "blockuse -n")
	}
	out, err := run(ctx, "xfs_db", append(args, image)...)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, m := range reXfsUse.FindAllStringSubmatch(out, -1) {
		switch {
		case m[3] != "" && m[4] != "":
			parts = append(parts, fmt.Sprintf("xfs %s of %s (inode %s)", m[2], m[4], m[3]))
		case m[3] != "":
			parts = append(parts, fmt.Sprintf("xfs %s of inode %s", m[2], m[3]))
		default:
			parts = append(parts, "xfs "+xfsType(m[2]))
		}
	}
	if len(parts) == 0 {
		return []string{"xfs: " + strings.TrimSpace(out)}, nil
	}
	return parts, nil
}

func xfsType(t string) string {
	switch t {
	case "sb":
		return "superblock"
	case "log":
		return "log (journal)"
	case "agf", "agi", "agfl":
		return "allocation group header (" + t + ")"
	case "free1", "free2":
		return "free space"
	}
	return t + " block"
}

// ---- btrfs ----

var (
	reChunk  = regexp.MustCompile(`CHUNK_ITEM (\d+)\)`)
	reLength = regexp.MustCompile(`length (\d+) owner \d+ stripe_len \d+ type (\S+)`)
	reStripe = regexp.MustCompile(`stripe \d+ devid \d+ offset (\d+)`)
	reOwner  = regexp.MustCompile(`owner (\S+)`)
)

type chunk struct {
	logical, length int64
	typ             string
	phys            []int64
}

func btrfs(ctx context.Context, image string, off, n int64) ([]string, error) {
	const superAt = 64 << 10
	if off < superAt+4096 && off+n > superAt {
		return []string{"btrfs superblock"}, nil
	}
	out, err := run(ctx, "btrfs", "inspect-internal", "dump-tree", "-t", "chunk", image)
	if err != nil {
		return nil, err
	}
	var chunks []chunk
	var cur *chunk
	for _, line := range strings.Split(out, "\n") {
		if m := reChunk.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			chunks = append(chunks, chunk{logical: v})
			cur = &chunks[len(chunks)-1]
			continue
		}
		if cur == nil {
			continue
		}
		if m := reLength.FindStringSubmatch(line); m != nil {
			cur.length, _ = strconv.ParseInt(m[1], 10, 64)
			cur.typ = m[2]
		}
		if m := reStripe.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			cur.phys = append(cur.phys, v)
		}
	}
	for _, c := range chunks {
		for _, p := range c.phys {
			if off < p || off >= p+c.length {
				continue
			}
			logical := c.logical + off - p
			if strings.HasPrefix(c.typ, "DATA") {
				return []string{fmt.Sprintf("btrfs data extent at logical %d (%s chunk)", logical, c.typ)}, nil
			}
			what := fmt.Sprintf("btrfs %s tree block at logical %d", strings.ToLower(strings.SplitN(c.typ, "|", 2)[0]), logical)
			if out, err := run(ctx, "btrfs", "inspect-internal", "dump-tree", "-b", strconv.FormatInt(logical, 10), image); err == nil {
				if m := reOwner.FindStringSubmatch(out); m != nil {
					what += " owned by " + m[1]
				}
			}
			return []string{what}, nil
		}
	}
	return []string{fmt.Sprintf("btrfs: byte %d is in no chunk (unallocated space)", off)}, nil
}
