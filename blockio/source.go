package blockio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
)

// Source is a volume opened read-only for backup: an io.ReaderAt of exactly Size bytes that
// also says where its data extents are. It is safe for concurrent use.
type Source struct {
	f *os.File
	// direct is f's file opened again with O_DIRECT (openDirect), for aligned reads: a disk
	// gives several times more to a few direct reads in flight than to buffered reads, and a
	// backup does not push the host's working set out of the page cache. nil where O_DIRECT
	// is refused.
	direct *os.File
	path   string
	size   int64
	device bool
	// noSeekData is set once the filesystem refuses SEEK_DATA; from then on the rest of the
	// file counts as data.
	noSeekData atomic.Bool
}

// OpenSource opens the block device or regular file at path for reading. The size is fixed at
// open: a file that grows later is read only up to its size at open.
func OpenSource(path string) (*Source, error) {
	// Stat before opening: opening a FIFO for reading would block.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathError("volume", path, err)
	}
	if !fi.Mode().IsRegular() && !isBlockDevice(fi) {
		return nil, fmt.Errorf("volume %s: %w", path, ErrNotVolume)
	}
	f, err := openNoAtime(path)
	if err != nil {
		return nil, pathError("volume", path, err)
	}
	s, err := newSource(f, path)
	if err != nil {
		_ = f.Close() // read-only: nothing to lose
		return nil, err
	}
	// A hint only: a filesystem that ignores it reads the same bytes.
	_ = adviseSequential(f)
	s.direct = openDirect(f, path, os.O_RDONLY)
	return s, nil
}

// openNoAtime opens path read-only without updating its access time where the kernel lets
// us (O_NOATIME needs the file's owner or root).
func openNoAtime(path string) (*os.File, error) {
	if flagNoAtime != 0 {
		f, err := os.OpenFile(path, os.O_RDONLY|flagNoAtime, 0)
		if !errors.Is(err, fs.ErrPermission) {
			return f, err
		}
	}
	return os.OpenFile(path, os.O_RDONLY, 0)
}

// newSource checks, on the open file, what the path named: the path may have been replaced
// between the stat and the open.
func newSource(f *os.File, path string) (*Source, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, pathError("volume", path, err)
	}
	s := &Source{f: f, path: path}
	switch {
	case fi.Mode().IsRegular():
		s.size = fi.Size()
	case isBlockDevice(fi):
		s.device = true
		if s.size, err = DeviceSize(f); err != nil {
			return nil, fmt.Errorf("volume %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("volume %s: %w", path, ErrNotVolume)
	}
	return s, nil
}

// Size returns the volume's size in bytes: the file's size or the device's (BLKGETSIZE64).
func (s *Source) Size() int64 { return s.size }

// IsDevice reports whether the volume is a block device rather than an image file.
func (s *Source) IsDevice() bool { return s.device }

// Path returns the path the volume was opened with.
func (s *Source) Path() string { return s.path }

// ReadAt reads len(p) bytes at off, retrying reads that a signal interrupts. Reading past Size
// returns the bytes up to Size and io.EOF; a file that shrank under us is an error, since the
// bytes the backup was promised are gone.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read volume %s: negative offset %d", s.path, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	var tail error
	if rest := s.size - off; int64(len(p)) > rest {
		p, tail = p[:rest], io.EOF
	}
	f := s.f
	if s.direct != nil && isAligned(p, off, Alignment) {
		f = s.direct
	}
	n := 0
	for n < len(p) {
		m, err := f.ReadAt(p[n:], off+int64(n))
		if err != nil && f == s.direct && errors.Is(err, syscall.EINVAL) {
			f, err = s.f, nil // this file system refuses O_DIRECT after all: read buffered
			continue
		}
		n += m
		switch {
		case err == nil, errors.Is(err, syscall.EINTR):
		case errors.Is(err, io.EOF):
			return n, s.shrank("read", off+int64(n))
		default:
			return n, fmt.Errorf("read volume %s at offset %d: %w", s.path, off+int64(n), err)
		}
	}
	return n, tail
}

// NextData returns the next data extent [start, end) at or after off. Image files are asked
// with SEEK_DATA/SEEK_HOLE, so holes are skipped without reading them; extents are in the
// filesystem's block granularity and may contain zeros. Devices, and filesystems that cannot
// answer, are data to the end. At or after the end, and when only holes remain, it returns
// start = end = Size() and io.EOF. A file that shrank below Size is an error, as in ReadAt.
func (s *Source) NextData(off int64) (start, end int64, err error) {
	if off < 0 {
		return 0, 0, fmt.Errorf("volume %s: negative offset %d", s.path, off)
	}
	if off >= s.size {
		return s.size, s.size, io.EOF
	}
	if s.device || s.noSeekData.Load() {
		return off, s.size, nil
	}
	start, end, ok, err := seekData(s.f, off, s.size)
	if err != nil {
		return 0, 0, fmt.Errorf("volume %s: find data after offset %d: %w", s.path, off, err)
	}
	if !ok {
		s.noSeekData.Store(true)
	} else if start >= s.size {
		// No more data as the filesystem sees it now. A file cut short since open has none
		// past its new end either: taken for holes, the bytes it lost would be backed up as
		// zeros. A cut inside an extent ends that extent early (SEEK_HOLE stops at the new
		// end), and the caller's next look, from there, lands here. Looked at only here, not
		// at every extent's end: an fstat per extent of a fragmented image.
		if err := s.checkSize(off); err != nil {
			return 0, 0, err
		}
	}
	if start >= s.size {
		return s.size, s.size, io.EOF
	}
	return start, end, nil
}

// checkSize fails when the file is now smaller than its size at open.
func (s *Source) checkSize(off int64) error {
	fi, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("volume %s: %w", s.path, err)
	}
	if fi.Size() < s.size {
		return s.shrank("find data in", off)
	}
	return nil
}

// shrank is the error for a file found smaller than its size at open: the bytes the backup
// was promised are gone, and neither a short read nor a hole may stand in for them.
func (s *Source) shrank(op string, off int64) error {
	return fmt.Errorf("%s volume %s at offset %d: file shrank below %d bytes: %w",
		op, s.path, off, s.size, io.ErrUnexpectedEOF)
}

// DropCache tells the kernel the backup is done with [off, off+n), so reading a large volume
// once does not evict everything else from the page cache. It is a hint; errors are rare and
// harmless to ignore.
func (s *Source) DropCache(off, n int64) error {
	if err := adviseDontNeed(s.f, off, n); err != nil {
		return fmt.Errorf("volume %s: drop cache: %w", s.path, err)
	}
	return nil
}

// Close closes the volume.
func (s *Source) Close() error {
	if s.direct != nil {
		_ = s.direct.Close() // read-only: nothing to lose
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close volume %s: %w", s.path, err)
	}
	return nil
}
