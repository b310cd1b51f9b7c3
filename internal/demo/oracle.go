package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/powercut/powercut/internal/demo/extent"
	"github.com/powercut/powercut/record"
)

// Oracle names.
const (
	OracleOpen      = "open"         // (1) the extent opens
	OracleStructure = "structure"    // (2) every active slot matches its block
	OracleVersion   = "version"      // (3) versions between acknowledged and issued
	OracleFlush     = "flush-number" // (4) the flush number never goes backwards
	OracleReopen    = "reopen"       // (5) opening twice gives the same result
)

// Violation is one broken promise in one crash state. Block is -1 when no block is involved.
type Violation struct {
	Oracle string
	Block  int64
	Detail string
}

func (v Violation) String() string {
	if v.Block >= 0 {
		return fmt.Sprintf("%s: block %d: %s", v.Oracle, v.Block, v.Detail)
	}
	return fmt.Sprintf("%s: %s", v.Oracle, v.Detail)
}

// snapshot is what an open extent shows: per block the active slot and the data's hash, and
// the flush number.
type snapshot struct {
	flush  uint64
	active []uint64 // the active slot's on-disk hash, 0 for an empty slot
	hash   []uint64
}

func take(e *extent.Extent) (*snapshot, error) {
	s := &snapshot{flush: e.FlushNumber()}
	for b := int64(0); b < e.Blocks(); b++ {
		d, err := e.Read(b)
		if err != nil {
			return nil, err
		}
		c, err := e.Context(b, e.Active(b))
		if err != nil {
			return nil, err
		}
		var h uint64
		if c != nil {
			h = c.OnDiskHash
		}
		s.active = append(s.active, h)
		s.hash = append(s.hash, extent.Hash(d))
	}
	return s, nil
}

func (s *snapshot) diff(o *snapshot, what string) []Violation {
	var out []Violation
	if s.flush != o.flush {
		out = append(out, Violation{OracleReopen, -1, fmt.Sprintf("%s: flush number %d, first open %d", what, o.flush, s.flush)})
	}
	for b := range s.hash {
		if s.hash[b] != o.hash[b] || s.active[b] != o.active[b] {
			out = append(out, Violation{OracleReopen, int64(b), fmt.Sprintf("%s: active context %016x over data %016x, first open %016x over %016x", what, o.active[b], o.hash[b], s.active[b], s.hash[b])})
		}
	}
	return out
}

// Check runs the oracles on one crash image. lastMark is the last mark issued before the crash
// point ("" for none): every flush acknowledged up to it is owed. The image is never written:
// the extent is opened on a copy-on-write layer over it. An error means the check could not run.
func (x *Expect) Check(img io.ReaderAt, size int64, lastMark string) ([]Violation, error) {
	me, ok := x.Marks[lastMark]
	if !ok {
		return nil, fmt.Errorf("demo oracle: mark %q is not one the workload issued", lastMark)
	}
	cow := record.NewCOWStore(img, size)
	dev := extent.StoreDevice{S: cow}
	// (1) open succeeds.
	e, err := extent.Open(dev, x.Options, true)
	if errors.Is(err, extent.ErrNotFormatted) && lastMark == "" {
		// The crash came before the creation was acknowledged: no extent is a fine outcome.
		return nil, nil
	}
	if err != nil {
		v := Violation{OracleOpen, -1, err.Error()}
		if b, ok := extent.IsMissingSlot(err); ok {
			v.Block = b
		}
		return []Violation{v}, nil
	}
	var out []Violation
	// (2) structure: the active slots (a trusted clean bitmap, or the rehash) match the data.
	probs, err := e.Validate()
	if err != nil {
		return nil, fmt.Errorf("demo oracle: %w", err)
	}
	for _, p := range probs {
		out = append(out, Violation{OracleStructure, p.Block, p.Detail})
	}
	// (3) versions.
	owedBy := lastMark
	if owedBy == "" {
		owedBy = "no flush yet"
	}
	for b := int64(0); b < e.Blocks(); b++ {
		d, err := e.Read(b)
		if err != nil {
			return nil, fmt.Errorf("demo oracle: %w", err)
		}
		v, perr := ParseBlock(d, b)
		if perr == nil && v > 0 && !bytes.Equal(d, BlockData(x.Seed, b, v, len(d))) {
			perr = fmt.Errorf("version %d header over damaged content", v)
		}
		switch {
		case perr != nil:
			out = append(out, Violation{OracleVersion, b, perr.Error()})
		case v < me.Owed[b]:
			out = append(out, Violation{OracleVersion, b, fmt.Sprintf("holds version %d, but %s acknowledged version %d (lost write)", v, owedBy, me.Owed[b])})
		case v > me.Issued[b]:
			out = append(out, Violation{OracleVersion, b, fmt.Sprintf("holds version %d, newer than any issued by then (%d)", v, me.Issued[b])})
		}
	}
	// (4) flush number.
	if e.FlushNumber() < me.Flush {
		out = append(out, Violation{OracleFlush, -1, fmt.Sprintf("flush number %d, but %s acknowledged flush number %d", e.FlushNumber(), owedBy, me.Flush)})
	}
	// (5) opening twice gives the same result: once more as is, and once after a recovery flush
	// (what a restarted downstairs does next), which makes a dirty open's choice the bitmap.
	s1, err := take(e)
	if err != nil {
		return nil, fmt.Errorf("demo oracle: %w", err)
	}
	e2, err := extent.Open(dev, x.Options, true)
	if err != nil {
		return append(out, Violation{OracleReopen, -1, "second open failed: " + err.Error()}), nil
	}
	s2, err := take(e2)
	if err != nil {
		return nil, fmt.Errorf("demo oracle: %w", err)
	}
	out = append(out, s1.diff(s2, "second open")...)
	if err := e2.Flush(e2.FlushNumber()); err != nil {
		return nil, fmt.Errorf("demo oracle: recovery flush: %w", err)
	}
	e3, err := extent.Open(dev, x.Options, true)
	if err != nil {
		return append(out, Violation{OracleReopen, -1, "open after a recovery flush failed: " + err.Error()}), nil
	}
	s3, err := take(e3)
	if err != nil {
		return nil, fmt.Errorf("demo oracle: %w", err)
	}
	return append(out, s1.diff(s3, "open after a recovery flush")...), nil
}
