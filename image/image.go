// Package image materialises crash images: a device's base image (or zeros) with an overlay of
// extents taken from the recording's data. Creating an Image costs the overlay, never a copy of
// the device; reads go to the log or the base on demand, and the base is never written.
package image

import (
	"fmt"
	"io"

	"github.com/powercut/powercut/model"
	"github.com/powercut/powercut/pclog"
)

// DataSource gives the data of log entry i (a WRITE) at byte off within it.
type DataSource interface {
	ReadData(i int, p []byte, off int64) error
}

// Image is one device's crash image. It implements io.ReaderAt and is safe for concurrent reads.
type Image struct {
	size int64
	base io.ReaderAt // nil: zeros
	data DataSource
	ov   *model.Overlay
}

// New returns the image of a device of size bytes: base (nil for zeros) overlaid with ov (nil:
// nothing overlaid).
func New(size int64, base io.ReaderAt, data DataSource, ov *model.Overlay) *Image {
	if ov == nil {
		ov = model.EmptyOverlay(size)
	}
	return &Image{size: size, base: base, data: data, ov: ov}
}

// Size is the device size in bytes.
func (im *Image) Size() int64 { return im.size }

// Extents returns the overlay as a flat extent list (cost: the whole overlay).
func (im *Image) Extents() model.Extents { return im.ov.Extents() }

// OverlayBytes is the number of bytes the overlay covers.
func (im *Image) OverlayBytes() int64 { return im.ov.Bytes() }

// Segment says where the bytes starting at off come from, without reading them: the overlay
// extent (clipped to start at off; Op is a log index, or model.SrcZero) when ok, else the base;
// end is where that run stops. Checkers that precompute hashes of what each operation wrote use
// it to judge an image without reading it.
func (im *Image) Segment(off int64) (e model.Extent, ok bool, end int64) { return im.ov.Segment(off) }

// Own, Shared and SharedSegment split the overlay into what every state of the crash point
// shares and what this state painted over it (model.Overlay): a checker can judge the shared
// part once per crash point and each state by its own extents only.
func (im *Image) Own() model.Extents { return im.ov.Own() }

// Shared: see Own.
func (im *Image) Shared() *model.LayerSnap { return im.ov.Shared() }

// SharedSegment: see Own.
func (im *Image) SharedSegment(off int64) (model.Extent, bool, int64) {
	return im.ov.SharedSegment(off)
}

// ReadAt implements io.ReaderAt.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("image read at negative offset %d", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > im.size-off {
		p = p[:im.size-off]
	}
	done := 0
	for done < len(p) {
		o := off + int64(done)
		e, ok, end := im.ov.Segment(o)
		n := int(min(int64(len(p)-done), end-o))
		dst := p[done : done+n]
		switch {
		case !ok:
			if err := im.readBase(dst, o); err != nil {
				return done, err
			}
		case e.Op == model.SrcZero:
			clear(dst)
		case e.Op >= 0:
			if err := im.data.ReadData(e.Op, dst, e.OpOff); err != nil {
				return done, err
			}
		default:
			if err := im.readBase(dst, o); err != nil {
				return done, err
			}
		}
		done += n
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

func (im *Image) readBase(p []byte, off int64) error {
	if im.base == nil {
		clear(p)
		return nil
	}
	n, err := im.base.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == io.EOF {
		clear(p[n:]) // a base shorter than the device reads as zeros past its end
		err = nil
	}
	if err != nil {
		return fmt.Errorf("read base at %d: %w", off, err)
	}
	return nil
}

// WriteTo copies the whole image to w (used by replay to produce a file).
func (im *Image) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for off := int64(0); off < im.size; {
		n := int(min(int64(len(buf)), im.size-off))
		if _, err := im.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return total, err
		}
		m, err := w.Write(buf[:n])
		total += int64(m)
		if err != nil {
			return total, err
		}
		off += int64(n)
	}
	return total, nil
}

// WriteOverlay writes only the overlay onto f, which must already hold the base content (or be
// sparse zeros when there is no base): cost proportional to the overlay.
func (im *Image) WriteOverlay(f io.WriterAt) error {
	buf := make([]byte, 1<<20)
	for _, e := range im.Extents() {
		for done := int64(0); done < e.Len; {
			n := min(int64(len(buf)), e.Len-done)
			if _, err := im.ReadAt(buf[:n], e.Off+done); err != nil && err != io.EOF {
				return err
			}
			if _, err := f.WriteAt(buf[:n], e.Off+done); err != nil {
				return err
			}
			done += n
		}
	}
	return nil
}

// LogSource adapts an opened pclog to DataSource.
type LogSource struct{ Log *pclog.Log }

// ReadData implements DataSource.
func (s LogSource) ReadData(i int, p []byte, off int64) error { return s.Log.ReadData(i, p, off) }
