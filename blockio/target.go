package blockio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Target is where a restore writes: an image file or a block device, of exactly Size bytes as
// far as the restore is concerned. It is safe for concurrent use.
type Target struct {
	f *os.File // read-write, through the page cache: unaligned writes, zeroing, fsync
	// direct is f's device opened again with O_DIRECT (openDirect), for aligned writes, so a
	// restore streams past the page cache; nil for files and where the device refuses O_DIRECT.
	direct    *os.File
	noDirect  atomic.Bool // set when the device refuses an O_DIRECT write after all
	block     int64       // alignment of offsets and lengths for O_DIRECT and BLKZEROOUT
	path      string
	size      int64
	device    bool
	fresh     bool // created by OpenTarget, or empty when opened: reads as zeros, its name may be new
	tail      bool // an image file larger than size when opened: Trim cuts it, once restored
	closeOnce sync.Once
	closeErr  error
}

// OpenTarget opens path for restoring a volume of size bytes. A missing path is created as a
// sparse regular file of that size with mode 0600 (its directory must exist). An existing
// regular file is extended to size and keeps its old content: the restore must write or Zero
// every range (unless Empty says it reads as zeros already, as a file that was empty does).
// One larger than size keeps its tail beyond size until Trim, which the restore calls once it
// has written and synced everything. A block device must hold at least size bytes; it is
// opened O_EXCL, so a mounted or otherwise claimed device fails with ErrInUse. OpenTarget does
// not check whether an image file is attached to a loop device; call InUse for that.
func OpenTarget(path string, size int64) (*Target, error) {
	if size < 0 {
		return nil, fmt.Errorf("restore target %s: negative size %d", path, size)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createTarget(path, size)
	case err != nil:
		return nil, pathError("restore target", path, err)
	case fi.Mode().IsRegular():
		return openFileTarget(path, size)
	case isBlockDevice(fi):
		return openDeviceTarget(path, size)
	}
	return nil, fmt.Errorf("restore target %s: %w", path, ErrNotVolume)
}

// CreateTarget is OpenTarget of a path that must not exist: a new sparse image file of size
// bytes, mode 0600. A file there already fails it with an error that matches fs.ErrExist.
func CreateTarget(path string, size int64) (*Target, error) {
	if size < 0 {
		return nil, fmt.Errorf("restore target %s: negative size %d", path, size)
	}
	return createTarget(path, size)
}

// errNoTmpfile means the file system cannot make unnamed files (O_TMPFILE), or this is not
// Linux: createTarget creates the file by name instead.
var errNoTmpfile = errors.New("no O_TMPFILE here")

// createTarget creates a new sparse image file. The link of an unnamed file (createSized), or
// O_EXCL where there is none, makes sure it is new: a file that appeared since the stat is not
// silently taken over.
func createTarget(path string, size int64) (*Target, error) {
	f, err := createSized(path, size)
	if errors.Is(err, errNoTmpfile) {
		f, err = createByName(path, size)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore target %s: directory %s does not exist: %w",
			path, filepath.Dir(path), fs.ErrNotExist)
	}
	if err != nil {
		return nil, pathError("restore target", path, err)
	}
	return &Target{f: f, path: path, size: size, fresh: true}, nil
}

// createByName is createSized on a file system without unnamed files: a process killed
// between the create and the truncate leaves an empty file.
func createByName(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		_ = os.Remove(path) // ours, empty and useless
		return nil, fmt.Errorf("set size to %d bytes: %w", size, err)
	}
	return f, nil
}

func openFileTarget(path string, size int64) (*Target, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, pathError("restore target", path, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = ErrNotVolume // replaced since the stat
	}
	if err == nil && fi.Size() < size {
		err = f.Truncate(size)
	}
	if err != nil {
		_ = f.Close() // nothing written yet
		return nil, fmt.Errorf("restore target %s: set size to %d bytes: %w", path, size, err)
	}
	// An empty file grown to size reads as zeros, as a created one does. A larger one is not
	// cut here: a restore that stops before it writes (cancelled while queued, its backup
	// deleted elsewhere, the repository's lock refused) would leave it without its tail.
	return &Target{f: f, path: path, size: size, fresh: fi.Size() == 0, tail: fi.Size() > size}, nil
}

func openDeviceTarget(path string, size int64) (*Target, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
	if isBusy(err) {
		reason, _ := InUse(path) // only to say why; the open already said busy
		if reason == "" {
			reason = "held open exclusively"
		}
		return nil, fmt.Errorf("restore target %s: %w (%s)", path, ErrInUse, reason)
	}
	if err != nil {
		return nil, pathError("restore target", path, err)
	}
	t, err := newDeviceTarget(f, path, size)
	if err != nil {
		_ = f.Close() // nothing written yet
		return nil, err
	}
	return t, nil
}

func newDeviceTarget(f *os.File, path string, size int64) (*Target, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, pathError("restore target", path, err)
	}
	if !isBlockDevice(fi) {
		return nil, fmt.Errorf("restore target %s: %w", path, ErrNotVolume)
	}
	devSize, err := DeviceSize(f)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	if devSize < size {
		return nil, fmt.Errorf("restore target %s: %w: the device has %d bytes, the volume needs %d",
			path, ErrTooSmall, devSize, size)
	}
	if ro, err := readOnly(f); err != nil || ro {
		if err == nil {
			err = errors.New("the device is read-only")
		}
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	t := &Target{f: f, path: path, size: size, device: true, block: Alignment}
	if lbs, err := logicalBlockSize(f); err == nil && lbs > t.block {
		t.block = lbs
	}
	// f's device, not whatever path names by now: the checks above were made on f. Not
	// exclusive: f already holds the claim, and a second O_EXCL open would be refused.
	t.direct = openDirect(f, path, os.O_RDWR)
	return t, nil
}

// IsDevice reports whether the target is a block device rather than an image file.
func (t *Target) IsDevice() bool { return t.device }

// Path returns the path the target was opened with.
func (t *Target) Path() string { return t.path }

// Size returns the size of the volume being restored, which may be less than a device's.
func (t *Target) Size() int64 { return t.size }

// Empty reports whether the target read as all zeros when opened (a file OpenTarget created
// or found empty), so a restore may skip zeroing the volume's holes.
func (t *Target) Empty() bool { return t.fresh }

// WriteAt writes p at off, which must lie within Size. Writes to a device whose offset,
// length and memory are aligned (see AlignedBuffer) go through O_DIRECT; others through the
// page cache.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > t.size-int64(len(p)) {
		return 0, fmt.Errorf("restore target %s: write of %d bytes at offset %d is outside the volume's %d bytes",
			t.path, len(p), off, t.size)
	}
	if t.direct != nil && !t.noDirect.Load() && isAligned(p, off, t.block) {
		n, err := t.direct.WriteAt(p, off)
		if err == nil {
			return n, nil
		}
		if n != 0 || !isUnsupported(err) {
			return n, fmt.Errorf("restore target %s: write at offset %d: %w", t.path, off+int64(n), err)
		}
		t.noDirect.Store(true) // the device takes no O_DIRECT after all; buffered from now on
	}
	n, err := t.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("restore target %s: write at offset %d: %w", t.path, off+int64(n), err)
	}
	return n, nil
}

// Zero makes [off, off+n) read as zeros without leaving old data behind: files get a punched
// hole (so the range takes no space), devices BLKZEROOUT; where either is unsupported, zeros
// are written.
func (t *Target) Zero(off, n int64) error {
	if off < 0 || n < 0 || off > t.size-n {
		return fmt.Errorf("restore target %s: zero %d bytes at offset %d: outside the volume's %d bytes",
			t.path, n, off, t.size)
	}
	if n == 0 {
		return nil
	}
	var err error
	if t.device {
		err = t.zeroDevice(off, n)
	} else if err = punchHole(t.f, off, n); isUnsupported(err) {
		err = t.writeZeros(off, n)
	}
	if err != nil {
		return fmt.Errorf("restore target %s: zero %d bytes at offset %d: %w", t.path, n, off, err)
	}
	return nil
}

// zeroDevice zeroes the block-aligned middle of the range with BLKZEROOUT and writes zeros
// over the unaligned head and tail, which BLKZEROOUT refuses.
func (t *Target) zeroDevice(off, n int64) error {
	end := off + n
	lo := (off + t.block - 1) / t.block * t.block
	hi := end / t.block * t.block
	if lo >= hi {
		return t.writeZeros(off, n)
	}
	if err := t.writeZeros(off, lo-off); err != nil {
		return err
	}
	if err := zeroOut(t.f, lo, hi-lo); isUnsupported(err) {
		if err := t.writeZeros(lo, hi-lo); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return t.writeZeros(hi, end-hi)
}

// zeroBuffer is a read-only aligned megabyte of zeros for writeZeros, allocated on first use.
var zeroBuffer = sync.OnceValue(func() []byte { return AlignedBuffer(1 << 20) })

// writeZeros writes zeros over [off, off+n), a megabyte at a time.
func (t *Target) writeZeros(off, n int64) error {
	zeros := zeroBuffer()
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if _, err := t.WriteAt(zeros[:chunk], off); err != nil {
			return err
		}
		off, n = off+chunk, n-chunk
	}
	return nil
}

// Sync makes everything written so far durable: fsync of the file or device (which also
// flushes the device's write cache) and, for a file OpenTarget created or found empty (a
// killed restore's, whose name may not be durable yet), of its directory.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("restore target %s: sync: %w", t.path, err)
	}
	if t.fresh {
		if err := syncDir(filepath.Dir(t.path)); err != nil {
			return fmt.Errorf("restore target %s: sync directory: %w", t.path, err)
		}
	}
	return nil
}

// Trim cuts an image file that was larger than the volume when opened to the volume's size,
// durably. Call it once the restore has written everything and Sync succeeded: until then the
// file keeps its tail, and a restore that fails leaves that much of the file as it was.
// Devices, and files that were not larger, have nothing to cut.
func (t *Target) Trim() error {
	if !t.tail {
		return nil
	}
	if err := t.f.Truncate(t.size); err != nil {
		return fmt.Errorf("restore target %s: set size to %d bytes: %w", t.path, t.size, err)
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("restore target %s: sync: %w", t.path, err)
	}
	t.tail = false
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the target and returns the first error closing reports; a write error that
// surfaces only at close must not pass for a good restore. Call Sync before for durability.
func (t *Target) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		if t.direct != nil {
			errs = append(errs, t.direct.Close())
		}
		errs = append(errs, t.f.Close())
		if err := errors.Join(errs...); err != nil {
			t.closeErr = fmt.Errorf("close restore target %s: %w", t.path, err)
		}
	})
	return t.closeErr
}
