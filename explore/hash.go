package explore

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/zeebo/xxh3"

	"github.com/powercut/powercut/model"
)

// key128 identifies an image's content: the sum, over every sector whose content differs from
// the base, of mix(device, sector, content hash). Sums make the key cheap and incremental: each
// op gets prefix sums of its sectors' shares once, so the share of any extent is one subtraction,
// a crash point's shared layer is summed once, and a state adds only the ranges it repaints.
// Writes that rewrite the base's own bytes and discards of already-zero ranges add nothing, so
// states whose images are byte-identical get the same key and are checked once.
type key128 struct{ a, b uint64 }

func (k key128) add(o key128) key128 { return key128{k.a + o.a, k.b + o.b} }
func (k key128) sub(o key128) key128 { return key128{k.a - o.a, k.b - o.b} }

func mix(dev uint16, sector int64, h uint64) key128 {
	var b [18]byte
	binary.LittleEndian.PutUint16(b[0:], dev)
	binary.LittleEndian.PutUint64(b[2:], uint64(sector))
	binary.LittleEndian.PutUint64(b[10:], h)
	return key128{xxh3.HashSeed(b[:], 0x5eed1), xxh3.HashSeed(b[:], 0x5eed2)}
}

// hasher caches, per op, the prefix sums of its sectors' key shares.
type hasher struct {
	src   *Source
	h     *model.History
	mu    sync.Mutex
	pre   map[int][]key128
	bytes int64  // memory held by pre
	buf   []byte // data and base scratch, under mu
}

// maxPrefixBytes bounds the prefix-sum cache: past it the cache starts over (arrays are
// recomputed from the log on demand), so a long recording is explored in bounded memory.
const maxPrefixBytes = 256 << 20

func newHasher(src *Source, h *model.History) *hasher {
	return &hasher{src: src, h: h, pre: map[int][]key128{}}
}

const hashChunk = 1 << 20

// prefix returns op i's prefix sums (len sectors+1), reading its data and the base under it once.
func (hs *hasher) prefix(i int) ([]key128, error) {
	if p, ok := hs.pre[i]; ok {
		return p, nil
	}
	o := &hs.h.Ops[i]
	ss := hs.h.SectorSize[o.Dev]
	n := o.Len / ss
	p := make([]key128, n+1)
	base := hs.src.Bases[o.Dev]
	if len(hs.buf) < 2*hashChunk {
		hs.buf = make([]byte, 2*hashChunk)
	}
	data := hs.buf[:min(o.Len, hashChunk)]
	bbuf := hs.buf[hashChunk : hashChunk+len(data)]
	zero := xxh3.Hash(make([]byte, ss))
	for done := int64(0); done < o.Len; done += int64(len(data)) {
		m := min(int64(len(data)), o.Len-done)
		d, bb := data[:m], bbuf[:m]
		if o.Kind == pclogWrite {
			if err := hs.src.Log.ReadData(i, d, done); err != nil {
				return nil, err
			}
		}
		if base != nil {
			n, err := base.ReadAt(bb, o.Off+done)
			if err != nil && err != io.EOF {
				return nil, fmt.Errorf("read base under op %d: %w", i, err)
			}
			clear(bb[n:]) // past the end of a short base: zeros, as the image reads it
		} else {
			clear(bb)
		}
		for k := int64(0); k < m/ss; k++ {
			j := done/ss + k
			var c key128
			var hc uint64
			if o.Kind == pclogWrite {
				hc = xxh3.Hash(d[k*ss : (k+1)*ss])
			} else {
				hc = zero
			}
			if hc != xxh3.Hash(bb[k*ss:(k+1)*ss]) {
				c = mix(o.Dev, o.Off/ss+j, hc)
			}
			p[j+1] = p[j].add(c)
		}
	}
	size := int64(len(p)) * 16
	if hs.bytes+size > maxPrefixBytes {
		hs.pre, hs.bytes = map[int][]key128{}, 0
	}
	hs.pre[i] = p
	hs.bytes += size
	return p, nil
}

// rangeKey is the key share of bytes [a, b) of device dev under overlay x.
func (hs *hasher) rangeKey(dev uint16, x *model.Overlay, a, b int64) (key128, error) {
	var k key128
	ss := hs.h.SectorSize[dev]
	for off := a; off < b; {
		e, ok, end := x.Segment(off)
		end = min(end, b)
		if ok {
			op, first := e.Op, e.OpOff
			if op == model.SrcZero {
				op, first = e.ZeroOp, off-hs.h.Ops[e.ZeroOp].Off
			}
			if op >= 0 {
				p, err := hs.prefix(op)
				if err != nil {
					return k, err
				}
				k = k.add(p[(first+end-off)/ss]).sub(p[first/ss])
			}
		}
		off = end
	}
	return k, nil
}

// layerKeys follows the shared layer of a walk: each epoch's key is the previous one plus the
// change over the ranges of the ops that settled at this crash point.
type layerKeys struct {
	hs   *hasher
	prev map[uint16]*model.Overlay
	key  key128
}

func (hs *hasher) newLayerKeys() *layerKeys {
	return &layerKeys{hs: hs, prev: map[uint16]*model.Overlay{}}
}

// next returns the key of epoch e's shared layer.
func (lk *layerKeys) next(e *model.Epoch) (key128, error) {
	hs := lk.hs
	hs.mu.Lock()
	defer hs.mu.Unlock()
	cur := map[uint16]*model.Overlay{}
	for dev := range hs.h.SectorSize {
		cur[dev] = e.Layer(dev)
	}
	for dev, rs := range hs.ranges(e.Settled) {
		for _, r := range rs {
			after, err := hs.rangeKey(dev, cur[dev], r[0], r[1])
			if err != nil {
				return lk.key, err
			}
			var before key128
			if p := lk.prev[dev]; p != nil {
				if before, err = hs.rangeKey(dev, p, r[0], r[1]); err != nil {
					return lk.key, err
				}
			}
			lk.key = lk.key.add(after).sub(before)
		}
	}
	lk.prev = cur
	return lk.key, nil
}

// stateKey is the key of a state of e with overlay img, given the layer's key: the layer's key
// with the ranges the state's own ops cover recomputed.
func (hs *hasher) stateKey(e *model.Epoch, lk key128, img map[uint16]*model.Overlay) (key128, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	k := lk
	for dev, rs := range hs.ranges(e.Unsettled()) {
		layer := e.Layer(dev)
		for _, r := range rs {
			before, err := hs.rangeKey(dev, layer, r[0], r[1])
			if err != nil {
				return k, err
			}
			after, err := hs.rangeKey(dev, img[dev], r[0], r[1])
			if err != nil {
				return k, err
			}
			k = k.add(after).sub(before)
		}
	}
	return k, nil
}

// ranges returns, per device, the merged byte ranges the given ops cover.
func (hs *hasher) ranges(ops []int) map[uint16][][2]int64 {
	out := map[uint16][][2]int64{}
	for _, i := range ops {
		o := &hs.h.Ops[i]
		out[o.Dev] = append(out[o.Dev], [2]int64{o.Off, o.Off + o.Len})
	}
	for dev, rs := range out {
		sortRanges(rs)
		m := rs[:0]
		for _, r := range rs {
			if len(m) > 0 && r[0] <= m[len(m)-1][1] {
				m[len(m)-1][1] = max(m[len(m)-1][1], r[1])
				continue
			}
			m = append(m, r)
		}
		out[dev] = m
	}
	return out
}
