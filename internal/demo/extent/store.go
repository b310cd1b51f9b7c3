package extent

import "io"

// Store is what StoreDevice needs: record.MemStore (and record.NewCOWStore) satisfy it.
type Store interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Size() int64
}

// StoreDevice adapts a store to Device without recording anything: the oracles open crash images
// through it, on a copy-on-write layer, so that opening (which may write) never touches the image.
type StoreDevice struct{ S Store }

// ReadAt implements Device.
func (d StoreDevice) ReadAt(p []byte, off int64) (int, error) { return d.S.ReadAt(p, off) }

// WriteAt implements Device.
func (d StoreDevice) WriteAt(p []byte, off int64, fua bool) error {
	_, err := d.S.WriteAt(p, off)
	return err
}

// Flush implements Device.
func (d StoreDevice) Flush() error { return d.S.Sync() }

// Size implements Device.
func (d StoreDevice) Size() int64 { return d.S.Size() }
