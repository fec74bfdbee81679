//go:build linux

package fusefs

import (
	"context"
	"io"
	"syscall"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// lvmEntry is a backup's lvm/ directory: one directory per volume group found in the
// image. Its metadata is read when lvm/ is first listed, not when the backup is.
func (f *FS) lvmEntry(kind string, b *index.Backup, m *repo.Manifest) entry {
	i := ino(kind+"-lvm", b.ID)
	return f.dirEntry("lvm", i, b.CreatedAt, func() *dir {
		d := f.newDir(i, b.CreatedAt, func(ctx context.Context) ([]entry, error) { return f.listLVM(ctx, kind, b, m) })
		d.immutable = true
		return d
	})
}

func (f *FS) listLVM(ctx context.Context, kind string, b *index.Backup, m *repo.Manifest) ([]entry, error) {
	vgs, err := lvm.ImageVGs(ctx, f.repo.Image(m))
	if err != nil {
		// What could be read is still shown; the rest is for the log.
		f.log.Warn("lvm metadata partly unreadable", "backup_id", b.ID, "err", err)
	}
	out := make([]entry, 0, len(vgs))
	for name, vg := range vgs {
		// Names as well as UUIDs: an image's metadata may hold anything, two groups or
		// volumes of one UUID (a cloned PV) or none, and go-fuse takes two entries of one
		// inode number for one node: a read of one would return the other's bytes.
		i := ino(kind+"-lvm-vg", b.ID, vg.UUID, name)
		out = append(out, f.dirEntry(name, i, b.CreatedAt, func() *dir {
			d := f.newDir(i, b.CreatedAt, func(context.Context) ([]entry, error) { return f.listVG(b, m, name, vg), nil })
			d.immutable = true
			return d
		}))
	}
	return out, nil
}

// listVG: <lv>.img for each LV that can be read, <lv>.not-exposed (a line saying why) for
// the others, so `ls` shows every visible LV of the group.
func (f *FS) listVG(b *index.Backup, m *repo.Manifest, vgName string, vg *lvm.VG) []entry {
	out := make([]entry, 0, len(vg.LVs))
	for _, lv := range vg.LVs {
		v, err := lv.Volume(f.repo.Image(m))
		if err != nil {
			name := lvm.PathName(lv.Name) + ".not-exposed"
			text := []byte(lv.Reason + "\n")
			out = append(out, f.fileEntry(name, ino("lvm-reason", b.ID, vg.UUID, vgName, lv.UUID, name), b.CreatedAt,
				func() fileNode { return &bytesFile{data: text} }, int64(len(text)), int64(len(text))))
			continue
		}
		name := lvm.PathName(lv.Name) + ".img"
		out = append(out, f.fileEntry(name, ino("lvm-lv", b.ID, vg.UUID, vgName, lv.UUID, name), b.CreatedAt, func() fileNode {
			return &lvFile{f: f, lv: v, backupID: b.ID, name: "lvm/" + vgName + "/" + name}
		}, lv.Size, lv.Size))
	}
	return out
}

// lvFile is a logical volume inside a backup's image, read along its segments.
type lvFile struct {
	fileBase
	f        *FS
	lv       *lvm.Volume
	backupID string
	name     string
}

var (
	_ fs.NodeOpener    = (*lvFile)(nil)
	_ fs.NodeReader    = (*lvFile)(nil)
	_ fs.NodeLseeker   = (*lvFile)(nil)
	_ fs.NodeGetattrer = (*lvFile)(nil)
)

// Read reads the LV piece by piece where its extents are in the image; as for disk.img, a
// block that fails verification fails the read with EIO.
func (n *lvFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := n.lv.Size()
	if off >= size || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), size-off)]
	// As for disk.img: other readers may wait on the blocks this read loads.
	if _, err := n.lv.ReadAtContext(context.WithoutCancel(ctx), p, off); err != nil && err != io.EOF {
		return nil, n.f.readErrno(err, n.backupID, off, len(p), n.name)
	}
	return fuse.ReadResultData(p), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the image's block map along the LV's
// mapping, so holes in an LV are skipped as they are in disk.img.
func (n *lvFile) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off >= uint64(n.lv.Size()) {
		return 0, syscall.ENXIO
	}
	// Not cancelled by an interrupt, as in imageFile.Lseek: lseek(2) has no EINTR.
	pos, err := n.lv.Seek(context.WithoutCancel(ctx), int64(off), whence == seekData)
	if err == io.EOF {
		return 0, syscall.ENXIO
	}
	if err != nil {
		return 0, n.f.readErrno(err, n.backupID, int64(off), 0, n.name)
	}
	return uint64(pos), 0
}
