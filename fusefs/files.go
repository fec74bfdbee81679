//go:build linux

package fusefs

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileBase is what every regular file shares: fixed attributes, read-only opens that keep
// the kernel's page cache (the content never changes).
type fileBase struct {
	fs.Inode
	attr fuse.Attr
}

type fileNode interface {
	fs.InodeEmbedder
	base() *fileBase
}

func (b *fileBase) base() *fileBase { return b }

// Getattr reports the file's attributes.
func (b *fileBase) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = b.attr
	return 0
}

// Open refuses writes and lets the kernel keep cached pages across opens.
func (b *fileBase) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// fileEntry is the entry of a regular file of size bytes, of which dataBytes are not holes.
func (f *FS) fileEntry(name string, ino uint64, mtime time.Time, mk func() fileNode, size, dataBytes int64) entry {
	a := f.attr(ino, syscall.S_IFREG|f.fileMode(), size, mtime)
	a.Blocks = uint64(dataBytes+511) / 512
	return entry{name: name, attr: a, node: func() fs.InodeEmbedder {
		n := mk()
		n.base().attr = a
		return n
	}}
}

// imageFile is a backup's volume image, or one partition of it: [offset, offset+size) of the image.
type imageFile struct {
	fileBase
	f        *FS
	img      *repo.Image
	backupID string
	name     string
	offset   int64
	size     int64
}

var (
	_ fs.NodeOpener    = (*imageFile)(nil)
	_ fs.NodeReader    = (*imageFile)(nil)
	_ fs.NodeLseeker   = (*imageFile)(nil)
	_ fs.NodeGetattrer = (*imageFile)(nil)
)

// Read reads from the image. A block that fails verification fails the whole read with EIO
// and a log line naming the backup and offset: never wrong bytes.
func (n *imageFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.size || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), n.size-off)]
	// Other readers may be waiting on the blocks this read loads (the chunk cache loads each
	// once), so an interrupt of this one must not fail theirs: read to the end.
	got, err := n.img.ReadAtContext(context.WithoutCancel(ctx), p, n.offset+off)
	if err != nil && !(err == io.EOF && got == len(p)) {
		return nil, n.f.readErrno(err, n.backupID, n.offset+off, len(p), n.name)
	}
	return fuse.ReadResultData(p), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the block map, so cp --sparse, dd conv=sparse
// and qemu-img skip holes without reading them.
func (n *imageFile) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off >= uint64(n.size) {
		return 0, syscall.ENXIO
	}
	end := n.offset + n.size
	// lseek(2) has no EINTR: callers (Go's os.File.Seek, cp) do not retry it, so an interrupt
	// (a Go caller's preemption signal is one) must not abort the lookup. It is bounded by
	// the backend's own timeouts.
	start, dataEnd, err := n.img.NextData(context.WithoutCancel(ctx), n.offset+int64(off))
	if err == io.EOF || (err == nil && start >= end) {
		if whence == seekData {
			return 0, syscall.ENXIO
		}
		return off, 0 // the rest is a hole
	}
	if err != nil {
		return 0, n.f.readErrno(err, n.backupID, n.offset+int64(off), 0, n.name)
	}
	if whence == seekData {
		return uint64(start - n.offset), 0
	}
	if start > n.offset+int64(off) {
		return off, 0 // off is in a hole
	}
	return uint64(min(dataEnd, end) - n.offset), 0
}

// recordFile is backup.json: the backup's record as the index has it when the file is opened.
// Unlike the image, the record changes (a rename, protect, a restore's outcome, here or on
// another gateway), so each open reads it afresh and reads bypass the page cache: a kept
// page, or a size the kernel cached, would show the record as it was.
type recordFile struct {
	fileBase
	f  *FS
	id string
}

var (
	_ fs.NodeOpener    = (*recordFile)(nil)
	_ fs.NodeReader    = (*recordFile)(nil)
	_ fs.NodeGetattrer = (*recordFile)(nil)
)

// recordHandle is one open of backup.json: the record as it was then.
type recordHandle struct{ data []byte }

// Open reads the record.
func (n *recordFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	rec, errno := n.f.record(n.id)
	if errno != 0 {
		return nil, 0, errno
	}
	return &recordHandle{data: rec}, fuse.FOPEN_DIRECT_IO, 0
}

// Getattr reports the size of the record as it is now, briefly cached.
func (n *recordFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	rec, errno := n.f.record(n.id)
	if errno != 0 {
		return errno
	}
	out.Attr = n.attr
	out.Size = uint64(len(rec))
	out.Blocks = (out.Size + 511) / 512
	out.SetTimeout(shortTimeout)
	return 0
}

// Read reads the record of the open.
func (n *recordFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*recordHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

// bytesFile is a small file held in memory (the LVM metadata text).
type bytesFile struct {
	fileBase
	data []byte
}

var _ fs.NodeReader = (*bytesFile)(nil)

// Read reads the bytes.
func (n *bytesFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(n.data)))
	return fuse.ReadResultData(n.data[off:end]), 0
}

// latestLink points at a volume's newest backup; the target follows the volume's listing.
type latestLink struct {
	fs.Inode
	vol *dir
}

var (
	_ fs.NodeReadlinker = (*latestLink)(nil)
	_ fs.NodeGetattrer  = (*latestLink)(nil)
)

func (l *latestLink) target(ctx context.Context) (*entry, string, syscall.Errno) {
	es, err := l.vol.load(ctx)
	if err != nil {
		return nil, "", errno(err)
	}
	for i := range es {
		if es[i].name == "latest" {
			return &es[i], es[i].target, 0
		}
	}
	return nil, "", syscall.ENOENT
}

// Readlink returns the newest backup's directory name.
func (l *latestLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	_, t, errno := l.target(ctx)
	if errno != 0 {
		return nil, errno
	}
	return []byte(t), 0
}

// Getattr reports the link with short timeouts: it moves when a backup completes.
func (l *latestLink) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e, t, errno := l.target(ctx)
	if errno != 0 {
		return errno
	}
	out.Attr = e.attr
	out.Size = uint64(len(t))
	out.SetTimeout(shortTimeout)
	return 0
}
