package explore

import (
	"encoding/binary"
	"sync"

	"github.com/zeebo/xxh3"

	"github.com/powercut/powercut/model"
)

// key128 identifies an image's content: the sum over every sector that differs from nothing in
// particular of mix(device, sector, content hash) minus mix(device, sector, base hash). Sums make
// the key incremental: a state's key is its crash point's shared-layer key plus the changes in the
// ranges it paints, so computing it costs the state's own overlay, not the device.
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

// hasher caches per-sector content hashes of op data and of the base.
type hasher struct {
	src  *Source
	h    *model.History
	mu   sync.Mutex
	ops  map[int][]uint64
	base map[uint16]map[int64]uint64
	zero map[int64]uint64 // sector size -> hash of a zero sector
}

func newHasher(src *Source, h *model.History) *hasher {
	return &hasher{src: src, h: h, ops: map[int][]uint64{}, base: map[uint16]map[int64]uint64{}, zero: map[int64]uint64{}}
}

func (hs *hasher) zeroHash(ss int64) uint64 {
	if z, ok := hs.zero[ss]; ok {
		return z
	}
	z := xxh3.Hash(make([]byte, ss))
	hs.zero[ss] = z
	return z
}

func (hs *hasher) opHashes(i int) ([]uint64, error) {
	if v, ok := hs.ops[i]; ok {
		return v, nil
	}
	o := &hs.h.Ops[i]
	ss := hs.h.SectorSize[o.Dev]
	buf := make([]byte, o.Len)
	if err := hs.src.Log.ReadData(i, buf, 0); err != nil {
		return nil, err
	}
	v := make([]uint64, o.Len/ss)
	for s := range v {
		v[s] = xxh3.Hash(buf[int64(s)*ss : int64(s+1)*ss])
	}
	hs.ops[i] = v
	return v, nil
}

func (hs *hasher) baseHash(dev uint16, sector int64) (uint64, error) {
	m := hs.base[dev]
	if m == nil {
		m = map[int64]uint64{}
		hs.base[dev] = m
	}
	if v, ok := m[sector]; ok {
		return v, nil
	}
	ss := hs.h.SectorSize[dev]
	var v uint64
	if b := hs.src.Bases[dev]; b != nil {
		buf := make([]byte, ss)
		if _, err := b.ReadAt(buf, sector*ss); err != nil {
			return 0, err
		}
		v = xxh3.Hash(buf)
	} else {
		v = hs.zeroHash(ss)
	}
	m[sector] = v
	return v, nil
}

// contentAt returns the content hash of sector s of device dev under overlay x.
func (hs *hasher) contentAt(dev uint16, x model.Extents, s int64) (uint64, error) {
	ss := hs.h.SectorSize[dev]
	e, ok := x.Lookup(s * ss)
	switch {
	case !ok || e.Op == model.SrcBase:
		return hs.baseHash(dev, s)
	case e.Op == model.SrcZero:
		return hs.zeroHash(ss), nil
	}
	v, err := hs.opHashes(e.Op)
	if err != nil {
		return 0, err
	}
	return v[(e.OpOff+s*ss-e.Off)/ss], nil
}

// contrib is a sector's share of the key under overlay x.
func (hs *hasher) contrib(dev uint16, x model.Extents, s int64) (key128, error) {
	c, err := hs.contentAt(dev, x, s)
	if err != nil {
		return key128{}, err
	}
	b, err := hs.baseHash(dev, s)
	if err != nil {
		return key128{}, err
	}
	if c == b {
		return key128{}, nil
	}
	return mix(dev, s, c).sub(mix(dev, s, b)), nil
}

// layerKey is the key of the epoch's shared layer.
func (hs *hasher) layerKey(e *model.Epoch) (key128, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var k key128
	for dev, ss := range hs.h.SectorSize {
		x := e.Layer(dev)
		for _, ext := range x {
			for s := ext.Off / ss; s < (ext.Off+ext.Len)/ss; s++ {
				c, err := hs.contrib(dev, x, s)
				if err != nil {
					return k, err
				}
				k = k.add(c)
			}
		}
	}
	return k, nil
}

// stateKey is the key of a state of e with overlay img, given the layer's key.
func (hs *hasher) stateKey(e *model.Epoch, lk key128, img map[uint16]model.Extents) (key128, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	k := lk
	seen := map[[2]int64]bool{}
	for _, i := range e.Unsettled() {
		o := &hs.h.Ops[i]
		ss := hs.h.SectorSize[o.Dev]
		layer := e.Layer(o.Dev)
		for s := o.Off / ss; s < (o.Off+o.Len)/ss; s++ {
			if seen[[2]int64{int64(o.Dev), s}] {
				continue
			}
			seen[[2]int64{int64(o.Dev), s}] = true
			before, err := hs.contrib(o.Dev, layer, s)
			if err != nil {
				return k, err
			}
			after, err := hs.contrib(o.Dev, img[o.Dev], s)
			if err != nil {
				return k, err
			}
			k = k.add(after).sub(before)
		}
	}
	return k, nil
}
