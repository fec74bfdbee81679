package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/google/uuid"
)

// SnapshotRequest asks for a point-in-time snapshot of a volume (seed 3.1.5).
type SnapshotRequest struct {
	Volume      string
	Name        string
	Description string
	Force       bool  // snapshot an in-use volume (crash-consistent)
	Hooks       Hooks // commands around the snapshot, as a backup's (admins only; they stand for Force)
}

// CreateSnapshot takes a snapshot: a reflinked copy of an image file (XFS, btrfs) or an LVM
// snapshot. A volume whose back end can do neither gets a clear error, never a copy that is
// not a point in time.
func (s *Service) CreateSnapshot(ctx context.Context, req SnapshotRequest) (*index.Snapshot, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := req.Hooks.validate(c); err != nil {
		return nil, err
	}
	if req.Name != "" {
		if err := validName(req.Name); err != nil {
			return nil, err
		}
	}
	v, err := s.Volume(ctx, req.Volume)
	if err != nil {
		return nil, err
	}
	if v.Kind == KindNBD {
		return nil, invalidf("volume %s is an NBD export: cairn keeps no snapshots of it; back it up directly (its server tracks changes: --incremental --bitmap NAME)", v.Name)
	}
	if reason, err := blockio.InUse(v.Path); err != nil {
		return nil, fmt.Errorf("volume %s: %w", v.Name, err)
	} else if reason != "" && !req.Force && req.Hooks.empty() {
		return nil, wrapf(ErrInUse, "volume %s is in use (%s): its I/O is not quiesced; add --force for a crash-consistent snapshot, or quiesce it with --pre-hook and --post-hook", v.Name, reason)
	}
	id := uuid.NewString()
	var snap *blockio.Snapshot
	err = s.aroundPointInTime(ctx, req.Hooks, hookSubject{snapshotID: id, project: v.Project, volume: v, dir: workDir(ctx)},
		func(f string, a ...any) {}, // logged by aroundPointInTime; a snapshot has no job
		func() error {
			var err error
			snap, err = blockio.TakeSnapshot(v.Path, id[:8])
			return err
		})
	switch {
	case errors.Is(err, blockio.ErrNoSnapshot):
		return nil, wrapf(ErrInvalid, "volume %s: %v", v.Name, err)
	case errors.Is(err, ErrInvalid): // a pre-hook's, which names the volume
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	// Asked once the snapshot is taken, so that a restore accepted meanwhile is seen too.
	if err := s.notBeingRestored(c, v); err != nil {
		_ = snap.Remove()
		return nil, err
	}
	// The volume's record has its size when it was registered or last backed up.
	size := v.Size
	if src, err := blockio.OpenSource(snap.Path); err == nil {
		size = src.Size()
		_ = src.Close() // read-only
	}
	rec := &index.Snapshot{ID: id, Name: req.Name, Description: req.Description, VolumeID: v.ID, Project: v.Project,
		Status: index.SnapshotAvailable, Size: size, Kind: snap.Kind, Path: snap.Path, CreatedAt: now(), UpdatedAt: now()}
	if err := s.idx.CreateSnapshot(rec); err != nil {
		_ = snap.Remove()
		return nil, err
	}
	if err := s.saveSnapshot(ctx, rec); err != nil {
		// A Put the client saw fail may have landed: a record left stored would bring the
		// removed snapshot back to rebuild-index and other gateways.
		if derr := s.repo.DeleteMeta(context.WithoutCancel(ctx), metaSnapshots, id); derr != nil && !errors.Is(derr, backend.ErrNotFound) {
			// The record may be stored and stays, so the snapshot does too: removed, it came
			// back from its record to rebuild-index and other gateways, available with
			// nothing at its path.
			s.log.Error("cannot remove the record of a snapshot whose store failed", "snapshot_id", id, "error", derr)
			if serr := s.saveSnapshot(context.WithoutCancel(ctx), rec); serr != nil {
				s.log.Warn("cannot write the snapshot's record to the repository", "snapshot_id", id, "error", serr)
			}
			return nil, fmt.Errorf("snapshot %s is kept: its record in the repository could not be stored for certain nor removed (%w); delete it with 'cairn snapshot delete %s' once the repository answers", id, err, id)
		}
		_ = s.idx.DeleteSnapshot(rec.ID)
		_ = snap.Remove()
		return nil, err
	}
	s.log.Info("snapshot created", "snapshot_id", id, "volume_id", v.ID, "kind", snap.Kind)
	return rec, nil
}

// notRestoredOnto refuses v while a restore writes its file or device, or a device that shares
// blocks with it (restoringOnto). The restore's backup is named to a caller c who sees its
// project: an admin's restore of another project's backup onto a device that shares blocks
// with a member's volume is "a restore" to the member [TestRestoreOverlappingAVolumeBeingBackedUpIsRefused].
func (s *Service) notRestoredOnto(c Caller, v *index.Volume) error {
	id, err := s.restoringOnto(v.Path)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if id == "" {
		return nil
	}
	what := "a restore"
	if b, berr := s.idx.Backup(id); c.Admin || berr == nil && c.sees(b.Project) {
		what = "the restore of backup " + id
	}
	return wrapf(ErrConflict, "volume %s is being written by %s: wait for it to finish", v.Name, what)
}

// notBeingRestored refuses a snapshot of a volume a restore is writing: it holds neither its
// old contents nor the backup's, and an available snapshot of it would give available
// backups of a volume that never existed [TestSnapshotOfAVolumeBeingRestoredIsRefused].
func (s *Service) notBeingRestored(c Caller, v *index.Volume) error {
	if err := s.notRestoredOnto(c, v); err != nil {
		return err
	}
	cur, err := s.idx.Volume(v.ID)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if cur.Status == index.VolumeRestoringBackup || cur.Status == index.VolumeCreating {
		return wrapf(ErrConflict, "volume %s is %s: wait for the restore to finish", v.Name, cur.Status)
	}
	return nil
}

// ListSnapshots returns the snapshots the caller may see, of one volume if given.
func (s *Service) ListSnapshots(ctx context.Context, volume string, allProjects bool) ([]*index.Snapshot, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	var volumeID string
	if volume != "" {
		v, err := s.findVolume(ctx, volume)
		if err != nil {
			return nil, err
		}
		volumeID = v.ID
	}
	all, err := s.idx.Snapshots()
	if err != nil {
		return nil, err
	}
	var out []*index.Snapshot
	for _, sn := range all {
		if (sn.Project == c.Project || (allProjects && c.Admin)) && (volumeID == "" || sn.VolumeID == volumeID) {
			out = append(out, sn)
		}
	}
	return out, nil
}

// Snapshot returns a snapshot by id, unique name, or id prefix of at least 8 characters.
func (s *Service) Snapshot(ctx context.Context, ref string) (*index.Snapshot, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if sn, err := s.idx.Snapshot(ref); err == nil && c.sees(sn.Project) {
		return sn, nil
	}
	all, err := s.idx.Snapshots()
	if err != nil {
		return nil, err
	}
	// A name in the project the caller acts in first, as Backup does
	// [TestAdminNamesASnapshotOfTheProjectItActsIn].
	var found, own []*index.Snapshot
	for _, sn := range all {
		if c.sees(sn.Project) && ((sn.Name != "" && sn.Name == ref) || (len(ref) >= 8 && strings.HasPrefix(sn.ID, ref))) {
			found = append(found, sn)
			if sn.Project == c.Project && sn.Name == ref {
				own = append(own, sn)
			}
		}
	}
	if len(own) > 0 {
		found = own
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, wrapf(ErrNotFound, "snapshot %s not found: see 'cairn snapshot list'", ref)
	}
	return nil, invalidf("%d snapshots match %q: use the snapshot id", len(found), ref)
}

// DeleteSnapshot removes a snapshot that no backup is reading.
func (s *Service) DeleteSnapshot(ctx context.Context, ref string) (*index.Snapshot, error) {
	sn, err := s.Snapshot(ctx, ref)
	if err != nil {
		return nil, err
	}
	if _, err := s.idx.UpdateSnapshot(sn.ID, func(rec *index.Snapshot) error {
		if rec.Status == index.SnapshotBackingUp {
			return wrapf(ErrConflict, "snapshot %s is being backed up: wait for the backup, or cancel it", rec.ID)
		}
		rec.Status = index.SnapshotDeleting
		return nil
	}); err != nil {
		return nil, err
	}
	// Its record in the repository goes first: one left behind would bring the snapshot back,
	// after it is removed, to rebuild-index and every other gateway.
	if err := s.repo.DeleteMeta(ctx, metaSnapshots, sn.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
		// A Delete the client saw fail may have happened: the kept snapshot's record is
		// stored again.
		if serr := s.saveSnapshot(context.WithoutCancel(ctx), sn); serr != nil {
			s.log.Warn("cannot store again the record of a snapshot whose delete failed", "snapshot_id", sn.ID, "error", serr)
		}
		s.setSnapshotStatus(sn.ID, index.SnapshotAvailable)
		return nil, fmt.Errorf("snapshot %s is kept: its record in the repository cannot be removed (%w); try again", sn.ID, err)
	}
	if err := blockio.ExistingSnapshot(sn.Kind, sn.Path).Remove(); err != nil {
		if serr := s.saveSnapshot(context.WithoutCancel(ctx), sn); serr != nil {
			s.log.Error("cannot store again the record of a snapshot whose delete failed", "snapshot_id", sn.ID, "error", serr)
		}
		s.setSnapshotStatus(sn.ID, index.SnapshotAvailable)
		return nil, fmt.Errorf("delete snapshot %s: %w", sn.ID, err)
	}
	if err := s.idx.DeleteSnapshot(sn.ID); err != nil {
		return nil, err
	}
	s.log.Info("snapshot deleted", "snapshot_id", sn.ID, "volume_id", sn.VolumeID)
	return sn, nil
}

// backupSubject resolves what a backup reads: the volume, or the snapshot it names.
func (s *Service) backupSubject(ctx context.Context, req BackupRequest) (*index.Volume, *index.Snapshot, error) {
	if req.SnapshotID == "" {
		v, err := s.Volume(ctx, req.Volume)
		return v, nil, err
	}
	sn, err := s.Snapshot(ctx, req.SnapshotID)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.idx.Volume(sn.VolumeID)
	if err != nil {
		return nil, nil, wrapf(ErrNotFound, "snapshot %s: its volume %s is gone", sn.ID, sn.VolumeID)
	}
	if req.Volume != "" {
		named, err := s.findVolume(ctx, req.Volume)
		if err != nil {
			return nil, nil, err
		}
		if named.ID != v.ID {
			return nil, nil, invalidf("snapshot %s is of volume %s, not %s", sn.ID, v.Name, named.Name)
		}
	}
	return v, sn, nil
}

// claimVolume marks the volume backing-up; one backup or restore at a time. It refuses one
// whose changed-block tracking went off since v, the record the backup planned with, was read.
// was gets the status and reason the claim replaced.
func (s *Service) claimVolume(c Caller, v *index.Volume, size int64, was *index.Volume) func() error {
	return func() error {
		// A restore onto the path that is no volume's, or onto a device that shares blocks
		// with the volume's (a partition's disk), claims it only here
		// [TestBackupOfAFileBeingRestoredIsRefused,
		// TestRestoreOverlappingAVolumeBeingBackedUpIsRefused].
		if err := s.notRestoredOnto(c, v); err != nil {
			return err
		}
		_, err := s.idx.UpdateVolume(v.ID, func(rec *index.Volume) error {
			if rec.Status != index.VolumeAvailable && rec.Status != index.VolumeError {
				return wrapf(ErrConflict, "volume %s is %s: wait for it to finish", rec.Name, rec.Status)
			}
			if v.TrackChanges && !rec.TrackChanges {
				// Turned off since v was read for the read plan (which may have cloned into
				// the base store): the update gave the base back, so this backup must not
				// keep one [TestTrackingTurnedOffWhileABackupBegins].
				return wrapf(ErrConflict, "volume %s's changed-block tracking was turned off while this backup began: back it up again", rec.Name)
			}
			was.Status, was.FailReason = rec.Status, rec.FailReason
			rec.Status, rec.Size = index.VolumeBackingUp, size
			return nil
		})
		return err
	}
}

// claimSnapshot marks the snapshot backing-up.
func (s *Service) claimSnapshot(sn *index.Snapshot) func() error {
	return func() error {
		_, err := s.idx.UpdateSnapshot(sn.ID, func(rec *index.Snapshot) error {
			if rec.Status != index.SnapshotAvailable {
				return wrapf(ErrConflict, "snapshot %s is %s: wait for it to finish", rec.ID, rec.Status)
			}
			rec.Status = index.SnapshotBackingUp
			return nil
		})
		return err
	}
}

func (s *Service) setSnapshotStatus(id string, status index.SnapshotStatus) {
	if _, err := s.idx.UpdateSnapshot(id, func(rec *index.Snapshot) error {
		rec.Status = status
		return nil
	}); err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Error("cannot set snapshot status", "snapshot_id", id, "status", status, "error", err)
	}
}

// tempSnapshotPrefix names the snapshots --force takes for one backup, so that recovery can
// find and remove those a crash left behind (reflink clones beside the image file).
const tempSnapshotPrefix = "tmp-"

func (s *Service) removeTempSnapshots(volumePath string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(volumePath), "."+filepath.Base(volumePath)+".cairn-snap-"+tempSnapshotPrefix+"*"))
	for _, m := range matches {
		if err := os.Remove(m); err == nil {
			s.log.Warn("removed a snapshot left by an interrupted backup", "path", m)
		}
	}
}
