//go:build linux

package fusefs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/blockio/part"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/hanwen/go-fuse/v2/fs"
)

// listRoot: volumes/ and backups/.
func (f *FS) listRoot(context.Context) ([]entry, error) {
	return []entry{
		f.dirEntry("volumes", ino("volumes"), f.mtime, func() *dir { return f.newDir(ino("volumes"), f.mtime, f.listVolumes) }),
		f.dirEntry("backups", ino("backups"), f.mtime, func() *dir {
			d := f.newDir(ino("backups"), f.mtime, f.listBackups)
			d.lookup = f.lookupBackup
			return d
		}),
	}, nil
}

// listVolumes names each volume by its sanitised name; volumes whose names collide (the
// same name in two projects, or names that sanitise alike) all get "-<short id>".
func (f *FS) listVolumes(context.Context) ([]entry, error) {
	vols, err := f.ix.Volumes()
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var shown []*index.Volume
	count := map[string]int{}
	for _, v := range vols {
		if f.o.Project != "" && v.Project != f.o.Project {
			continue
		}
		shown = append(shown, v)
		count[sanitize(v.Name)]++
	}
	// A volume that is gone (deleted, unmanaged) keeps its backups: it is listed by its id
	// (unique, where its old name may be a new volume's; Cinder shows the id too), so the
	// backups of a deleted VM's disk are found where an admin looks
	// [TestMountListsTheBackupsOfADeletedVolume].
	gone, err := f.ix.GoneVolumes(f.visible)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	for _, g := range gone {
		count[sanitize(g.ID)]++
		shown = append(shown, &index.Volume{ID: g.ID, Name: g.ID, CreatedAt: g.Backups[0].CreatedAt})
	}
	out := make([]entry, 0, len(shown))
	for _, v := range shown {
		name := sanitize(v.Name)
		if count[name] > 1 {
			name += "-" + shortID(v.ID)
		}
		vid := v.ID
		i := ino("volume", vid)
		out = append(out, f.dirEntry(name, i, v.CreatedAt, func() *dir {
			d := f.newDir(i, v.CreatedAt, nil)
			d.list = func(ctx context.Context) ([]entry, error) { return f.listVolume(ctx, d, vid) }
			return d
		}))
	}
	return out, nil
}

// listVolume lists a volume's available backups by time and name, and latest. Backups with
// the same directory name (the same second and name) get "-<short id>". The names cairn
// gave before backup names were part of them (the time alone) still resolve, unlisted.
func (f *FS) listVolume(_ context.Context, d *dir, volumeID string) ([]entry, error) {
	all, err := f.ix.VolumeBackups(volumeID)
	if err != nil {
		return nil, fmt.Errorf("list backups of volume %s: %w", volumeID, err)
	}
	var bs []*index.Backup
	count, bareCount := map[string]int{}, map[string]int{}
	for _, b := range all {
		if f.visible(b) {
			bs = append(bs, b)
			count[backupDirName(b)]++
			bareCount[bareDirName(b)]++
		}
	}
	out := make([]entry, 0, len(bs)+1)
	listed := make(map[string]bool, len(bs))
	var newest *index.Backup
	var latest string
	for _, b := range bs {
		name := backupDirName(b)
		if count[name] > 1 {
			name += "-" + shortID(b.ID)
		}
		listed[name] = true
		out = append(out, f.backupEntry(name, "volume-backup", b))
		if newest == nil || !b.CreatedAt.Before(newest.CreatedAt) {
			newest, latest = b, name
		}
	}
	for _, b := range bs {
		old := bareDirName(b)
		if bareCount[old] > 1 {
			old += "-" + shortID(b.ID)
		}
		if !listed[old] {
			e := f.backupEntry(old, "volume-backup-old-name", b)
			e.hidden = true
			out = append(out, e)
		}
	}
	if newest != nil {
		out = append(out, f.latestEntry(d, volumeID, latest, newest))
	}
	return out, nil
}

// listBackups lists every available backup by id.
func (f *FS) listBackups(context.Context) ([]entry, error) {
	all, err := f.ix.Backups()
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	out := make([]entry, 0, len(all))
	for _, b := range all {
		if f.visible(b) && sanitize(b.ID) == b.ID {
			out = append(out, f.backupEntry(b.ID, "id-backup", b))
		}
	}
	return out, nil
}

// lookupBackup finds backups/<id> with one index read.
func (f *FS) lookupBackup(_ context.Context, name string) (*entry, error) {
	b, err := f.ix.Backup(name)
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", name, err)
	}
	if !f.visible(b) || b.ID != name {
		return nil, nil
	}
	e := f.backupEntry(name, "id-backup", b)
	return &e, nil
}

// backupEntry is a backup's directory. Its inode number depends on where it is (kind), as a
// directory has one parent; the files in it are shared between both places.
func (f *FS) backupEntry(name, kind string, b *index.Backup) entry {
	i := ino(kind, b.ID)
	return f.dirEntry(name, i, b.CreatedAt, func() *dir {
		d := f.newDir(i, b.CreatedAt, nil)
		d.immutable = true
		d.list = func(ctx context.Context) ([]entry, error) { return f.listBackup(ctx, kind, b) }
		return d
	})
}

// manifest is the backup's authenticated manifest: sizes and block maps come from it, never
// from the index alone, and an index that says otherwise is damage, not a different image.
func (f *FS) manifest(ctx context.Context, b *index.Backup) (*repo.Manifest, error) {
	m, err := f.repo.GetManifest(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	if m.Size != b.Size || m.Root != b.Root || m.RootLevel != b.RootLevel {
		return nil, fmt.Errorf("backup %s: %w: its manifest and the index describe different backups", b.ID, repo.ErrCorrupt)
	}
	return m, nil
}

// listBackup: backup.json, disk.img and, with a partition table, partitions/; with LVM
// physical volumes on the image or its partitions, lvm/.
func (f *FS) listBackup(ctx context.Context, kind string, b *index.Backup) ([]entry, error) {
	rec, err := recordJSON(b)
	if err != nil {
		return nil, err
	}
	m, err := f.manifest(ctx, b)
	if err != nil {
		return nil, err
	}
	img := f.repo.Image(m)
	dataBytes := min(b.Stats.DataBlocks*int64(f.repo.Config().BlockSize), b.Size)
	out := []entry{
		f.recordEntry(b, int64(len(rec))),
		f.fileEntry("disk.img", ino("disk", b.ID), b.CreatedAt, func() fileNode {
			return &imageFile{f: f, img: f.repo.Image(m), backupID: b.ID, name: "disk.img", size: m.Size}
		}, b.Size, dataBytes),
	}
	parts, devs, err := lvm.ImageDevices(ctx, img)
	if err != nil {
		// The image stays readable; only its partitions are missing.
		f.log.Warn("partition table unreadable", "backup_id", b.ID, "err", err)
	}
	if len(parts) > 0 {
		i := ino(kind+"-partitions", b.ID)
		out = append(out, f.dirEntry("partitions", i, b.CreatedAt, func() *dir {
			d := f.newDir(i, b.CreatedAt, func(context.Context) ([]entry, error) { return f.listPartitions(b, m, parts), nil })
			d.immutable = true
			return d
		}))
	}
	if lvm.HasPV(ctx, img, devs) {
		out = append(out, f.lvmEntry(kind, b, m))
	}
	return out, nil
}

func (f *FS) listPartitions(b *index.Backup, m *repo.Manifest, parts []part.Partition) []entry {
	out := make([]entry, 0, len(parts))
	for _, p := range parts {
		name := fmt.Sprintf("p%d.img", p.Number)
		out = append(out, f.fileEntry(name, ino("partition", b.ID, name), b.CreatedAt, func() fileNode {
			return &imageFile{f: f, img: f.repo.Image(m), backupID: b.ID, name: "partitions/" + name,
				offset: p.Start, size: p.Length}
		}, p.Length, p.Length))
	}
	return out
}

// latestEntry is the volume's latest symlink; its target is read from the volume's listing
// each time, so it follows Refresh.
func (f *FS) latestEntry(d *dir, volumeID, target string, newest *index.Backup) entry {
	a := f.attr(ino("latest", volumeID), syscall.S_IFLNK|0o777, int64(len(target)), newest.CreatedAt)
	return entry{name: "latest", attr: a, short: true, target: target, node: func() fs.InodeEmbedder { return &latestLink{vol: d} }}
}

// recordEntry is a backup's backup.json, whose content is read from the index at each open
// (recordFile): size is the record's size now, and the kernel keeps it only briefly.
func (f *FS) recordEntry(b *index.Backup, size int64) entry {
	e := f.fileEntry("backup.json", ino("record", b.ID), b.CreatedAt, func() fileNode { return &recordFile{f: f, id: b.ID} }, size, size)
	e.short = true
	return e
}

// record is backup id's record as backup.json shows it, read from the index now; a backup
// gone from the tree (deleted, or no longer visible to the mount) has none.
func (f *FS) record(id string) ([]byte, syscall.Errno) {
	b, err := f.ix.Backup(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		f.log.Error("read backup record failed", "backup_id", id, "err", err)
		return nil, errno(err)
	}
	if !f.visible(b) {
		return nil, syscall.ENOENT
	}
	rec, err := recordJSON(b)
	if err != nil {
		return nil, syscall.EIO
	}
	return rec, 0
}

// recordJSON is the text of backup.json.
func recordJSON(b *index.Backup) ([]byte, error) {
	rec, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(rec, '\n'), nil
}
