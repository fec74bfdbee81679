package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/blockio/nbd"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// How a backup read its volume (Backup.ReadMode).
const (
	ReadFull        = "full"         // every data extent
	ReadReflinkDiff = "reflink-diff" // only extents no longer shared with the base a reflink clone left
	ReadNBDBitmap   = "nbd-bitmap"   // only extents an NBD export's dirty bitmap marks
	ReadThinDelta   = "thin-delta"   // only blocks a thin pool maps differently than in the kept snapshot
)

// Volume kinds.
const (
	KindFile   = "file"
	KindDevice = "device"
	KindNBD    = "nbd"
)

// bitmapProbes is how many blocks a bitmap calls unchanged are read and compared with the
// parent before the bitmap is trusted.
const bitmapProbes = 32

// volumeSource is what a backup reads: an image file or block device, or an NBD export.
type volumeSource interface {
	repo.Source
	Close() error
}

// readPlan is how one backup reads its volume: the source, and the change tracking that may
// spare it reading everything. StartBackup makes it; the job decides, under the repository
// lock, whether the tracking can be trusted against the parent.
type readPlan struct {
	src volumeSource
	// Reflink tracking: the clone the backup reads, kept as the base when the backup commits.
	store *blockio.BaseStore
	clone string
	kept  bool
	// unlock releases the store, which the job holds from its first look at a base until the
	// backup ends; nil when it does not hold it, and then it neither uses nor keeps a base.
	unlock func() error
	// inPlace: an incremental of a tracked image that is not in use reads the image itself
	// (image, the volume's path) until the job brings the parent's base forward in place
	// (advance); clone is then that base, which is never dropped: its .dirty record keeps it
	// usable when the backup fails. id is the backup's.
	inPlace  bool
	advanced bool
	image    string
	id       string
	// NBD: the export and the dirty bitmap named for an incremental.
	nbd    *nbd.Source
	bitmap string
	// Thin LV: the thin snapshot the backup reads, kept as the next base when it commits.
	thin     *blockio.ThinVolume
	thinSnap *blockio.Snapshot
	thinKept bool
	// fallback is why tracking that was asked for cannot be used, known already at start.
	fallback string
	// tmp is the snapshot --force took of an in-use volume that is not tracked.
	tmp *blockio.Snapshot
}

// close closes the source and drops a clone or thin snapshot that did not become the base
// (a kept thin snapshot is deactivated), or the snapshot.
func (p *readPlan) close() error {
	err := p.src.Close()
	if p.clone != "" && !p.kept && !p.advanced {
		if derr := p.store.Drop(p.clone); err == nil {
			err = derr
		}
	}
	if p.tmp != nil {
		if rerr := p.tmp.Remove(); err == nil {
			err = rerr
		}
	}
	if uerr := p.release(); err == nil {
		err = uerr
	}
	if p.thinSnap != nil {
		var rerr error
		if p.thinKept {
			rerr = p.thin.Deactivate(strings.TrimPrefix(p.thinSnap.Path, "/dev/"))
		} else {
			rerr = p.thinSnap.Remove()
		}
		if err == nil {
			err = rerr
		}
	}
	return err
}

// release unlocks the base store if the backup holds it. It runs before the volume is
// unclaimed, so that the volume's next backup finds the store free.
func (p *readPlan) release() error {
	if p.unlock == nil {
		return nil
	}
	err := p.unlock()
	p.unlock = nil
	return err
}

// openForBackup opens what a backup of v (or of its snapshot) reads. An NBD volume is its
// export. A tracked image file is read from a reflink clone made now, which becomes the next
// base; an in-use volume needs --force, and one that is not tracked is then read from a
// snapshot taken first.
func (s *Service) openForBackup(ctx context.Context, req BackupRequest, v *index.Volume, snap *index.Snapshot, id string) (*readPlan, error) {
	if req.Bitmap != "" {
		if v.Kind != KindNBD {
			return nil, invalidf("--bitmap names an NBD export's dirty bitmap, and volume %s is a %s; image files on XFS or btrfs are tracked with reflinks ('cairn volume manage --track-changes')", v.Name, v.Kind)
		}
		if !req.Incremental {
			return nil, invalidf("--bitmap needs --incremental: a full backup reads the whole volume")
		}
	}
	if v.Kind == KindNBD {
		if snap != nil {
			return nil, invalidf("volume %s is an NBD export: cairn keeps no snapshots of it", v.Name)
		}
		src, err := nbd.Open(ctx, v.Path, req.Bitmap)
		if err != nil {
			return nil, invalidf("volume %s: %v", v.Name, err)
		}
		return &readPlan{src: src, nbd: src, bitmap: req.Bitmap}, nil
	}
	plan := &readPlan{}
	srcPath := v.Path
	// Hooks quiesce the volume for its point in time only: the backup then reads a snapshot
	// or clone, never the volume as it goes on (docs/design.md, "Hooks").
	pit := !req.Hooks.empty()
	if snap != nil {
		srcPath = snap.Path
		if v.TrackChanges && req.Incremental {
			plan.fallback = "a snapshot is read in full: changed-block tracking follows the volume itself"
		}
	} else {
		reason, err := blockio.InUse(v.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, volumeGone(ctx, v)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if reason != "" && !req.Force && !pit { // hooks quiesce it: what --force is asked for
			return nil, wrapf(ErrInUse, "volume %s is in use (%s): its I/O is not quiesced; add --force for a crash-consistent backup, or quiesce it with --pre-hook and --post-hook", v.Name, reason)
		}
		if v.TrackChanges && v.Kind == KindFile {
			// The clone is a point in time too, so it serves --force as well. An incremental
			// of a volume not in use clones no more than what changed, in the job (advance).
			store, err := blockio.OpenBaseStore(v.Path, v.ID)
			var clone string
			if err == nil && req.Incremental && reason == "" && !pit {
				plan.store, plan.inPlace, plan.image, plan.id = store, true, v.Path, id
			} else if err == nil {
				clone, err = store.Clone(v.Path, id)
			}
			if err != nil {
				plan.fallback = fmt.Sprintf("cannot clone the volume for changed-block tracking (%v): read in full", err)
			} else if clone != "" {
				plan.store, plan.clone, srcPath = store, clone, clone
			}
		}
		if v.TrackChanges && v.Kind == KindDevice {
			// The thin snapshot is a point in time too, so it serves --force as well.
			if tv := blockio.Thin(v.Path); tv == nil {
				plan.fallback = fmt.Sprintf("volume %s is no longer a thin logical volume: read in full", v.Path)
			} else if snap, err := tv.TakeBase(id); err != nil {
				plan.fallback = fmt.Sprintf("cannot take a thin snapshot for changed-block tracking (%v): read in full", err)
			} else {
				plan.thin, plan.thinSnap, srcPath = tv, snap, snap.Path
			}
		}
		if plan.clone == "" && plan.thinSnap == nil && (reason != "" || pit) {
			tmp, err := blockio.TakeSnapshot(v.Path, tempSnapshotPrefix+id[:8])
			if err != nil {
				if errors.Is(err, blockio.ErrNoSnapshot) && reason == "" {
					return nil, wrapf(ErrInvalid, "volume %s cannot be snapshotted, and hooks need a point in time to run around: %v; back it up without hooks, or move it to XFS, btrfs or LVM", v.Name, err)
				}
				if errors.Is(err, blockio.ErrNoSnapshot) {
					return nil, wrapf(ErrInUse, "volume %s is in use (%s) and cannot be snapshotted for a crash-consistent backup: %v", v.Name, reason, err)
				}
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			plan.tmp, srcPath = tmp, tmp.Path
			s.log.Info("snapshot taken for a crash-consistent backup", "volume_id", v.ID, "kind", tmp.Kind, "reason", cmp.Or(reason, "hooks"))
		}
	}
	src, err := blockio.OpenSource(srcPath)
	if err != nil {
		if plan.tmp != nil {
			_ = plan.tmp.Remove()
		}
		if plan.clone != "" {
			_ = plan.store.Drop(plan.clone)
		}
		if plan.thinSnap != nil {
			_ = plan.thinSnap.Remove()
		}
		return nil, invalidf("volume %s: %v", v.Name, err)
	}
	plan.src = src
	return plan, nil
}

// volumeGone is the error for a backup of volume v whose image file or device is not at its
// path. An admin reads the path and the CLI's ways on; a member, who gave no path
// (Caller.shown), the API's. Before, a member read the path of an image in the state directory.
func volumeGone(ctx context.Context, v *index.Volume) error {
	if c, _ := CallerFrom(ctx); c.Admin {
		return wrapf(ErrNotFound, "volume %s: %s is gone: restore a backup of it (onto a new volume, or --to the path), or forget it with 'cairn volume unmanage %s'", v.Name, v.Path, v.Name)
	}
	what := "image file"
	if v.Kind == KindDevice {
		what = "device"
	}
	return wrapf(ErrNotFound, "volume %s: its %s is gone: restore a backup of it onto a new volume, or delete the volume", v.Name, what)
}

// readChoice is what the job decided: the changes to read (nil: read everything), the mode
// and the reason for a fallback, and the bytes the decision itself read.
type readChoice struct {
	changes  repo.Changes
	mode     string
	fallback string
	read     int64
}

// chooseRead decides how an incremental reads: only what tracking reports, when the tracking
// is there and belongs to the parent; otherwise everything, saying why. It runs under the
// repository lock, after the parent's manifest was found, so the parent's blocks can be read.
func (s *Service) chooseRead(ctx context.Context, p *readPlan, parent *index.Backup) readChoice {
	size := p.src.Size()
	if p.store != nil {
		unlock, err := p.store.Lock()
		if err != nil {
			// Another process's backup of the volume is using its bases: leave them alone.
			if p.inPlace {
				s.cloneNow(p) // a point in time, should the volume have come into use
			}
			return readChoice{mode: ReadFull, fallback: fmt.Sprintf("%v: read in full", err)}
		}
		p.unlock = unlock
	}
	if p.inPlace {
		changes, err := s.advance(p, parent, size)
		if err == nil {
			return readChoice{changes: changes, mode: ReadReflinkDiff}
		}
		if errors.Is(err, errSizeChanged) {
			// A clone would not have the backup's size either: the image is read as it is,
			// in full, as one not in use is without tracking.
			p.fallback = fmt.Sprintf("%v: read in full", err)
		} else {
			s.log.Info("change-tracking base not brought forward in place: cloning the volume", "volume", p.image, "reason", err)
			s.cloneNow(p)
		}
	}
	full := readChoice{mode: ReadFull, fallback: p.fallback}
	switch {
	case parent == nil:
		return full
	case p.clone != "":
		_, changes, err := p.reflinkChanges(p.clone, parent, size)
		if err != nil {
			full.fallback = fmt.Sprintf("%v: read in full", err)
			return full
		}
		return readChoice{changes: changes, mode: ReadReflinkDiff}
	case p.thinSnap != nil:
		return s.chooseThin(p, parent, size)
	case p.bitmap != "":
		if !p.nbd.HasBitmap(p.bitmap) {
			full.fallback = fmt.Sprintf("the NBD export offers no dirty bitmap %s (qemu:dirty-bitmap:%s): read in full", p.bitmap, p.bitmap)
			return full
		}
		if parent.Size != size {
			full.fallback = fmt.Sprintf("the volume's size changed since parent backup %s: read in full", parent.ID)
			return full
		}
		dirty, err := p.nbd.Dirty(ctx, p.bitmap)
		if err != nil {
			full.fallback = fmt.Sprintf("cannot read dirty bitmap %s: %v: read in full", p.bitmap, err)
			return full
		}
		probes, zeros, err := s.probeBlocks(p.nbd, dirty)
		if err != nil {
			full.fallback = fmt.Sprintf("cannot check dirty bitmap %s: %v: read in full", p.bitmap, err)
			return full
		}
		zeroed, err := s.zeroedSince(ctx, parent, zeros)
		if err != nil {
			full.fallback = fmt.Sprintf("cannot check dirty bitmap %s: %v: read in full", p.bitmap, err)
			return full
		}
		rp := &repo.Parent{Root: parent.Root, RootLevel: parent.RootLevel, Size: parent.Size, DataBlocks: parent.Stats.DataBlocks}
		differ, read, err := s.repo.DifferFromParent(ctx, p.src, rp, probes)
		full.read = read
		if err != nil {
			full.fallback = fmt.Sprintf("cannot check dirty bitmap %s: %v: read in full", p.bitmap, err)
			return full
		}
		if len(differ) > 0 {
			full.fallback = fmt.Sprintf("dirty bitmap %s missed changes: %d of %d sampled blocks it calls unchanged differ from parent backup %s (was it disabled, cleared, or begun after that backup?): read in full",
				p.bitmap, len(differ), len(probes), parent.ID)
			return full
		}
		if len(zeroed) > 0 {
			s.log.Info("ranges that read as zeros now and held data in the parent are read, whatever the bitmap says",
				"bitmap", p.bitmap, "parent_id", parent.ID, "bytes", zeroed.Bytes())
		}
		return readChoice{changes: dirty.Union(zeroed), mode: ReadNBDBitmap, read: read}
	}
	return full
}

// zeroedSince returns the parts of zeros (ranges the export reports as reading zeros) where
// the parent backup held data. They changed, whatever the dirty bitmap says: zeros written or
// discarded while the bitmap was disabled or cleared, or an export shrunk and grown back to
// its size, leave no dirty bit, and the spot check cannot see them (it samples blocks that
// hold data). Reading them costs next to nothing over NBD (the server answers with a hole),
// and the parent's block map says where it held data without reading a block.
func (s *Service) zeroedSince(ctx context.Context, parent *index.Backup, zeros blockio.Changes) (blockio.Changes, error) {
	if len(zeros) == 0 || parent.Root.IsZero() {
		return nil, nil
	}
	img := s.repo.Image(&repo.Manifest{ID: parent.ID, Root: parent.Root, RootLevel: parent.RootLevel, Size: parent.Size})
	var out blockio.Changes
	for _, z := range zeros {
		for pos := z.Start; pos < z.End; {
			start, end, err := img.NextData(ctx, pos)
			if errors.Is(err, io.EOF) || (err == nil && start >= z.End) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read the block map of parent backup %s: %w", parent.ID, err)
			}
			out = append(out, blockio.Extent{Start: start, End: min(end, z.End)})
			pos = end
		}
	}
	return out, nil
}

// errSizeChanged: the image's size is not the one its backup was asked with.
var errSizeChanged = errors.New("the volume's size changed")

// advance brings the parent's base forward to the image in place and makes the backup read
// it (docs/design.md, "Bringing a base forward in place"); it returns the ranges to read. It
// does not when the image came into use since the backup was asked for (a point in time is
// needed then), or when anything about the base cannot be trusted: the error says why, and
// the caller clones the whole image instead.
func (s *Service) advance(p *readPlan, parent *index.Backup, size int64) (blockio.Changes, error) {
	if parent == nil {
		return nil, errors.New("no parent backup")
	}
	if reason, err := blockio.InUse(p.image); err != nil {
		return nil, err
	} else if reason != "" {
		return nil, fmt.Errorf("the volume is in use now (%s)", reason)
	}
	// The backup's size was fixed when it was asked for; the image may have grown or shrunk
	// while the job waited. Compared by size alone, the base was brought forward to the
	// image's first bytes and the backup said it read what changed, the size change unsaid
	// [TestAQueuedTrackedIncrementalSeesTheVolumeGrow].
	if fi, err := os.Stat(p.image); err != nil {
		return nil, err
	} else if fi.Size() != size {
		return nil, fmt.Errorf("%w since the backup was asked for (%d bytes, now %d)", errSizeChanged, size, fi.Size())
	}
	base, changes, err := p.reflinkChanges(p.image, parent, size)
	if err != nil {
		return nil, err
	}
	if _, err := p.store.Advance(p.image, parent.ID, changes); err != nil {
		return nil, err
	}
	if err := p.use(base); err != nil {
		return nil, err
	}
	p.clone, p.advanced = base, true
	return changes, nil
}

// reflinkChanges returns the base the parent backup left and the ranges where file (a clone of
// the image, or the image itself) may differ from what the parent read: where FIEMAP finds
// the two differ, and those of the base's .dirty record (an earlier backup began to bring the
// base forward). The error says why they cannot be known.
func (p *readPlan) reflinkChanges(file string, parent *index.Backup, size int64) (string, blockio.Changes, error) {
	base, err := p.store.Base(parent.ID)
	if err != nil {
		return "", nil, fmt.Errorf("cannot use the change-tracking base of parent backup %s (%v)", parent.ID, err)
	}
	if base == "" {
		return "", nil, fmt.Errorf("no change-tracking base belongs to parent backup %s (removed, or that backup left none)", parent.ID)
	}
	if fi, err := os.Stat(base); err != nil || fi.Size() != size || parent.Size != size {
		return "", nil, fmt.Errorf("the volume's size changed since parent backup %s", parent.ID)
	}
	dirty, err := p.store.Dirty(parent.ID)
	if err != nil {
		return "", nil, err
	}
	diff, err := blockio.ReflinkDiff(file, base, size)
	if err != nil {
		return "", nil, fmt.Errorf("cannot compare the volume with its change-tracking base: %v", err)
	}
	return base, diff.Union(dirty), nil
}

// cloneNow clones the whole image for a backup that was to bring its base forward in place,
// and makes the backup read the clone, which becomes the next base as a clone taken at the
// start does. When that fails the image itself is read, in full, and no base is kept.
func (s *Service) cloneNow(p *readPlan) {
	clone, err := p.store.Clone(p.image, p.id)
	if err == nil {
		if err = p.use(clone); err != nil {
			_ = p.store.Drop(clone)
		}
	}
	if err != nil {
		p.fallback = fmt.Sprintf("cannot clone the volume for changed-block tracking (%v): read in full", err)
		return
	}
	p.clone = clone
}

// use makes the backup read the file at path instead of its source so far, which it closes.
func (p *readPlan) use(path string) error {
	src, err := blockio.OpenSource(path)
	if err != nil {
		return err
	}
	if src.Size() != p.src.Size() {
		src.Close()
		return fmt.Errorf("%s has %d bytes and the volume %d", path, src.Size(), p.src.Size())
	}
	old := p.src
	p.src = src
	return old.Close()
}

// chooseThin asks the thin pool which blocks differ between the snapshot the parent backup
// kept and the one this backup reads.
func (s *Service) chooseThin(p *readPlan, parent *index.Backup, size int64) readChoice {
	full := readChoice{mode: ReadFull}
	base, err := p.thin.Base(parent.ID)
	switch {
	case err != nil:
		full.fallback = fmt.Sprintf("cannot find the thin snapshot kept by parent backup %s (%v): read in full", parent.ID, err)
		return full
	case base == "":
		full.fallback = fmt.Sprintf("no thin snapshot kept by parent backup %s (removed, or that backup kept none): read in full", parent.ID)
		return full
	case parent.Size != size:
		full.fallback = fmt.Sprintf("the volume's size changed since parent backup %s: read in full", parent.ID)
		return full
	}
	changes, err := p.thin.Delta(base, strings.TrimPrefix(p.thinSnap.Path, "/dev/"), size)
	if err != nil {
		full.fallback = fmt.Sprintf("cannot compare the volume with the thin snapshot kept by parent backup %s: %v: read in full", parent.ID, err)
		return full
	}
	return readChoice{changes: changes, mode: ReadThinDelta}
}

// probeBlocks picks up to bitmapProbes blocks at random among those the export holds data in
// (in whole or in part: a write the bitmap missed may fill only part of a block that was
// empty) and the bitmap calls clean. It returns, from the same walk of the export's
// allocation, the ranges that read as zeros.
func (s *Service) probeBlocks(src *nbd.Source, dirty blockio.Changes) ([]int64, blockio.Changes, error) {
	bs := int64(s.repo.Config().BlockSize)
	var clean [][2]int64 // block ranges [first, end)
	var total int64
	var zeros blockio.Changes
	var next int64 // the first block not yet looked at: one that two extents share counts once
	for off := int64(0); ; {
		start, end, err := src.NextData(off)
		if errors.Is(err, io.EOF) {
			if off < src.Size() {
				zeros = append(zeros, blockio.Extent{Start: off, End: src.Size()})
			}
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if start > off {
			zeros = append(zeros, blockio.Extent{Start: off, End: start})
		}
		// The blocks the extent touches, but those any dirty range touches.
		last := (end + bs - 1) / bs
		for b := max(start/bs, next); b < last; {
			ds, de, derr := dirty.NextChange(b * bs)
			if derr != nil || ds >= last*bs {
				ds, de = last*bs, last*bs
			}
			if e := ds / bs; e > b {
				clean = append(clean, [2]int64{b, e})
				total += e - b
			}
			b = (de + bs - 1) / bs
		}
		next = max(next, last)
		off = end
	}
	if total == 0 {
		return nil, zeros, nil
	}
	var out []int64
	for range min(bitmapProbes, total) {
		k := rand.Int64N(total)
		for _, r := range clean {
			if n := r[1] - r[0]; k < n {
				out = append(out, r[0]+k)
				break
			} else {
				k -= n
			}
		}
	}
	return out, zeros, nil
}

// trackable reports whether the image file at path can be tracked with reflinks: its
// directory takes a base store and its file system clones.
func trackable(path, id string) error {
	st, err := blockio.OpenBaseStore(path, id)
	if err != nil {
		return err
	}
	if err := st.Probe(); err != nil {
		_ = blockio.RemoveBaseStore(path, id)
		return err
	}
	return nil
}
