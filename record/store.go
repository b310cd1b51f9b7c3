package record

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// Store is the backing storage of a recorded device: what the workload reads back.
type Store interface {
	io.ReaderAt
	io.WriterAt
	// Zero makes [off, off+n) read as zeros.
	Zero(off, n int64) error
	// Sync makes the store's content durable (a no-op for memory).
	Sync() error
	Size() int64
}

const chunkSize = 64 << 10

// MemStore is a sparse in-memory store of fixed size; unwritten ranges read as zeros, or as the
// base image's content when created with NewCOWStore.
type MemStore struct {
	mu     sync.RWMutex
	size   int64
	chunks map[int64][]byte
	base   io.ReaderAt // nil: zeros
}

// NewMemStore returns a zero-filled sparse store of size bytes.
func NewMemStore(size int64) *MemStore {
	return &MemStore{size: size, chunks: map[int64][]byte{}}
}

// NewCOWStore returns a copy-on-write view of base (never modified): writes land in memory.
func NewCOWStore(base io.ReaderAt, size int64) *MemStore {
	s := NewMemStore(size)
	s.base = base
	return s
}

// Size implements Store.
func (s *MemStore) Size() int64 { return s.size }

// Sync implements Store.
func (s *MemStore) Sync() error { return nil }

func (s *MemStore) bounds(off int64, n int) error {
	if off < 0 || off+int64(n) > s.size {
		return fmt.Errorf("[%d,+%d) outside the %d-byte store", off, n, s.size)
	}
	return nil
}

// ReadAt implements io.ReaderAt.
func (s *MemStore) ReadAt(p []byte, off int64) (int, error) {
	if err := s.bounds(off, len(p)); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	done := 0
	for done < len(p) {
		o := off + int64(done)
		ci, co := o/chunkSize, o%chunkSize
		n := min(int64(len(p)-done), chunkSize-co)
		dst := p[done : done+int(n)]
		if c, ok := s.chunks[ci]; ok {
			copy(dst, c[co:co+n])
		} else if s.base != nil {
			if _, err := s.base.ReadAt(dst, o); err != nil && err != io.EOF {
				return done, err
			}
		} else {
			clear(dst)
		}
		done += int(n)
	}
	return done, nil
}

// chunk returns chunk ci for writing, materialising it from the base or zeros. Caller holds mu.
func (s *MemStore) chunk(ci int64) ([]byte, error) {
	if c, ok := s.chunks[ci]; ok {
		return c, nil
	}
	n := min(chunkSize, s.size-ci*chunkSize)
	c := make([]byte, n)
	if s.base != nil {
		if _, err := s.base.ReadAt(c, ci*chunkSize); err != nil && err != io.EOF {
			return nil, err
		}
	}
	s.chunks[ci] = c
	return c, nil
}

// WriteAt implements io.WriterAt.
func (s *MemStore) WriteAt(p []byte, off int64) (int, error) {
	if err := s.bounds(off, len(p)); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	done := 0
	for done < len(p) {
		o := off + int64(done)
		ci, co := o/chunkSize, o%chunkSize
		c, err := s.chunk(ci)
		if err != nil {
			return done, err
		}
		done += copy(c[co:], p[done:])
	}
	return done, nil
}

// Zero implements Store.
func (s *MemStore) Zero(off, n int64) error {
	if err := s.bounds(off, int(n)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n > 0 {
		ci, co := off/chunkSize, off%chunkSize
		k := min(n, chunkSize-co)
		if co == 0 && k == chunkSize && s.base == nil {
			delete(s.chunks, ci)
		} else {
			c, err := s.chunk(ci)
			if err != nil {
				return err
			}
			clear(c[co : co+k])
		}
		off += k
		n -= k
	}
	return nil
}

// FileStore is a store backed by a regular file or block device.
type FileStore struct {
	f    *os.File
	size int64
}

// OpenFileStore opens path read-write; size 0 means the file's current size.
func OpenFileStore(path string, size int64) (*FileStore, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &FileStore{f: f, size: size}, nil
}

// Size implements Store.
func (s *FileStore) Size() int64 { return s.size }

// ReadAt implements io.ReaderAt.
func (s *FileStore) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt.
func (s *FileStore) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

// Zero implements Store by writing zeros (portable to files and block devices).
func (s *FileStore) Zero(off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := s.f.WriteAt(z[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// Sync implements Store.
func (s *FileStore) Sync() error { return s.f.Sync() }

// Close closes the file.
func (s *FileStore) Close() error { return s.f.Close() }
