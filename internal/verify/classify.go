package verify

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Failure classes.
const (
	ClassStale       = "stale"
	ClassMisdirected = "misdirected"
	ClassTorn        = "torn"
	ClassCorrupt     = "corrupt"
	ClassLostZeroes  = "lost-zeroes"
)

// Failure is one bad block.
type Failure struct {
	Offset int64  `json:"offset"`
	Class  string `json:"class"`
	// Detail is the human classification ("stale: holds version 3 of 7").
	Detail string   `json:"detail"`
	Dumps  []string `json:"dumps,omitempty"`
}

// Line is the one-line report of the failure.
func (f Failure) Line() string { return fmt.Sprintf("block 0x%x: %s", f.Offset, f.Detail) }

// expect is what a block may hold, derived from its Word.
type expect struct {
	lo, hi    uint64 // acceptable data versions (none when lo > hi)
	zeros     bool   // an all-zero block is acceptable
	foreign   bool   // content that is not a block of this run is acceptable (pre-run data, trimmed)
	owedZeros bool   // zeros are owed (WRITE_ZEROES, or TRIM with --trim-zeroes), for messages
	last      uint64
}

func expectFor(w Word, trimZeroes bool) expect {
	e := expect{lo: 1, hi: 0, last: w.last()}
	L := w.last()
	if L == 0 {
		// Never written by this run family: the block holds whatever was there before.
		return expect{lo: 1, hi: 0, zeros: true, foreign: true}
	}
	if w.uncertain() {
		e.lo, e.hi = max(w.durable(), 1), L
		if w.kind() != kindData {
			e.hi = L - 1
			e.zeros = true
			if w.kind() == kindTrim && !trimZeroes {
				e.foreign = true
			}
		}
		if w.zeroInWindow() {
			e.zeros = true
		}
		if w.durable() == 0 {
			e.foreign, e.zeros = true, true
		}
		return e
	}
	switch w.kind() {
	case kindData:
		e.lo, e.hi = L, L
	case kindZeroes:
		e.zeros, e.owedZeros = true, true
	case kindTrim:
		e.zeros = true
		if trimZeroes {
			e.owedZeros = true
		} else {
			// After TRIM the content is undefined until rewritten (NBD, SCSI UNMAP): zeros, the
			// previous content or something else, but never a block of ours that cannot be there.
			e.lo, e.hi, e.foreign = 1, L-1, true
		}
	}
	return e
}

// checker verifies blocks of one run.
type checker struct {
	runID      uint64
	bs         int64
	trimZeroes bool
}

// check returns "" when b (the block at offset off) is acceptable under w, else the failure
// class and detail.
func (c *checker) check(b []byte, off int64, w Word) (class, detail string) {
	e := expectFor(w, c.trimZeroes)
	h, ok := intact(b)
	if ok && h.runID == c.runID && h.offset == uint64(off) && h.version >= e.lo && h.version <= e.hi {
		return "", ""
	}
	if e.zeros && isZero(b) {
		return "", ""
	}
	if ok {
		switch {
		case h.offset != uint64(off) && h.runID == c.runID:
			return ClassMisdirected, fmt.Sprintf("misdirected: written for offset 0x%x (version %d)", h.offset, h.version)
		case h.runID != c.runID:
			if e.foreign {
				return "", ""
			}
			if h.offset != uint64(off) {
				return ClassMisdirected, fmt.Sprintf("misdirected: written for offset 0x%x by another run (%016x)", h.offset, h.runID)
			}
			return c.wrongState(e, ClassStale, fmt.Sprintf("stale: holds a block written by another run (%016x, version %d)", h.runID, h.version))
		case h.version > e.last:
			return ClassCorrupt, fmt.Sprintf("corrupt: holds version %d but only %d were issued", h.version, e.last)
		case e.owedZeros:
			return ClassLostZeroes, fmt.Sprintf("lost zeroes: holds version %d of %d, but version %d zeroed it", h.version, e.last, e.last)
		case e.lo <= e.hi && h.version < e.lo:
			if e.lo == e.hi {
				return ClassStale, fmt.Sprintf("stale: holds version %d of %d", h.version, e.last)
			}
			return ClassStale, fmt.Sprintf("stale: holds version %d of %d (versions %d..%d allowed)", h.version, e.last, e.lo, e.hi)
		default:
			return ClassStale, fmt.Sprintf("stale: holds version %d of %d, which is not allowed here", h.version, e.last)
		}
	}
	if t := c.torn(b, off, h, e); t != "" {
		return ClassTorn, t
	}
	if !h.ours() && e.foreign {
		return "", ""
	}
	if e.owedZeros {
		return ClassLostZeroes, fmt.Sprintf("lost zeroes: version %d zeroed the block, first non-zero byte at +0x%x", e.last, firstNonZero(b))
	}
	switch {
	case h.ours() && h.offset == uint64(off) && h.runID == c.runID:
		return ClassCorrupt, fmt.Sprintf("corrupt: header names version %d of this block but the checksum fails and its sectors match no version", h.version)
	case h.ours():
		return ClassCorrupt, fmt.Sprintf("corrupt: damaged block (header names offset 0x%x, run %016x, version %d; checksum fails)", h.offset, h.runID, h.version)
	}
	return ClassCorrupt, fmt.Sprintf("corrupt: no valid block header (expected %s)", e.describe())
}

func (c *checker) wrongState(e expect, class, detail string) (string, string) {
	if e.owedZeros {
		return ClassLostZeroes, "lost zeroes: " + strings.TrimPrefix(detail, "stale: ")
	}
	return class, detail
}

func (e expect) describe() string {
	var s []string
	if e.lo <= e.hi {
		if e.lo == e.hi {
			s = append(s, fmt.Sprintf("version %d", e.lo))
		} else {
			s = append(s, fmt.Sprintf("versions %d..%d", e.lo, e.hi))
		}
	}
	if e.zeros {
		s = append(s, "zeros")
	}
	if len(s) == 0 {
		return "anything"
	}
	return strings.Join(s, " or ")
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// tornCandidates lists the versions a torn block may have been assembled from: every acceptable
// version, the one before the oldest acceptable, and the version the header names (at most 32,
// newest first).
func (c *checker) tornCandidates(h header, off int64, e expect) []uint64 {
	var vs []uint64
	seen := map[uint64]bool{}
	add := func(v uint64) {
		if v >= 1 && v <= e.last && !seen[v] {
			seen[v] = true
			vs = append(vs, v)
		}
	}
	if h.ours() && h.runID == c.runID && h.offset == uint64(off) {
		add(h.version)
	}
	hi := e.hi
	if e.lo > e.hi {
		hi = e.last
	}
	lo := max(e.lo, 2) - 1
	for v := hi; v >= lo && len(vs) < 32; v-- {
		add(v)
	}
	add(e.last)
	return vs
}

// torn reports a block whose every sector equals the same sector of one of several candidate
// versions (or zeros) with at least two different sources: a tear at sector boundaries.
func (c *checker) torn(b []byte, off int64, h header, e expect) string {
	vs := c.tornCandidates(h, off, e)
	if len(vs) == 0 {
		return ""
	}
	imgs := make([][]byte, len(vs))
	for i, v := range vs {
		imgs[i] = make([]byte, len(b))
		makeBlock(imgs[i], c.runID, off, v)
	}
	const zeroSrc = -1
	nsec := len(b) / SectorSize
	src := make([]int, nsec)
	for s := 0; s < nsec; s++ {
		sec := b[s*SectorSize : (s+1)*SectorSize]
		src[s] = -2
		for i := range imgs {
			if string(sec) == string(imgs[i][s*SectorSize:(s+1)*SectorSize]) {
				src[s] = i
				break
			}
		}
		if src[s] == -2 && isZero(sec) {
			src[s] = zeroSrc
		}
		if src[s] == -2 {
			return ""
		}
	}
	name := func(i int) string {
		if i == zeroSrc {
			return "zeros"
		}
		return fmt.Sprintf("version %d", vs[i])
	}
	var switches []int
	for s := 1; s < nsec; s++ {
		if src[s] != src[s-1] {
			switches = append(switches, s)
		}
	}
	if len(switches) == 0 {
		return ""
	}
	k := switches[0]
	a, z := name(src[k-1]), name(src[k])
	if strings.HasPrefix(a, "version") && strings.HasPrefix(z, "version") {
		z = strings.TrimPrefix(z, "version ")
		a = strings.Replace(a, "version", "versions", 1)
	}
	msg := fmt.Sprintf("torn at sector %d between %s and %s", k, a, z)
	if len(switches) > 1 {
		msg += fmt.Sprintf(" (%d splits in all)", len(switches))
	}
	return msg
}

// expectedImage is the newest content the block should hold, for the .expected dump.
func (c *checker) expectedImage(off int64, w Word) []byte {
	b := make([]byte, c.bs)
	e := expectFor(w, c.trimZeroes)
	if !e.owedZeros && e.lo <= e.hi {
		makeBlock(b, c.runID, off, e.hi)
	}
	return b
}

// dump writes <name>.<offset>.received, .expected and .complete into dir and returns their paths.
// The .complete file is the full triage record: classification, expectation, tracking word and
// the decoded header of what was received.
func (c *checker) dump(dir, name string, off int64, got []byte, w Word, class, detail string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dump directory: %w", err)
	}
	base := filepath.Join(dir, fmt.Sprintf("%s.%d", name, off))
	e := expectFor(w, c.trimZeroes)
	h := parseHeader(got)
	var sb strings.Builder
	fmt.Fprintf(&sb, "block      0x%x (%d), %d bytes\n", off, off, len(got))
	fmt.Fprintf(&sb, "class      %s\n", class)
	fmt.Fprintf(&sb, "detail     %s\n", detail)
	fmt.Fprintf(&sb, "run        %016x\n", c.runID)
	fmt.Fprintf(&sb, "expected   %s (last version %d, kind %s, flushed version %d, uncertain %v, zeros in window %v)\n",
		e.describe(), w.last(), kindName(w.kind()), w.durable(), w.uncertain(), w.zeroInWindow())
	_, ok := intact(got)
	fmt.Fprintf(&sb, "received   magic %08x format %d sectors %d offset 0x%x run %016x version %d crc %08x (computed %08x, intact %v)\n",
		h.magic, h.format, h.sectors, h.offset, h.runID, h.version, h.crc, blockCRC(got), ok)
	files := []struct {
		ext  string
		data []byte
	}{{"received", got}, {"expected", c.expectedImage(off, w)}, {"complete", []byte(sb.String())}}
	var paths []string
	for _, f := range files {
		p := base + "." + f.ext
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return paths, fmt.Errorf("write dump: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func kindName(k int) string {
	switch k {
	case kindData:
		return "data"
	case kindZeroes:
		return "zeroes"
	case kindTrim:
		return "trim"
	}
	return fmt.Sprintf("kind%d", k)
}
