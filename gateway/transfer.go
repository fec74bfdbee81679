package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Export is a backup's exported metadata (seed 3.1.3).
type Export struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// ExportBackup returns the record that lets the backup be imported after the index is lost.
func (s *Service) ExportBackup(ctx context.Context, ref string) (*Export, error) {
	// For admins, as in Cinder (backup:backup-export is admin_api, as import is), asked
	// before the backup is looked up, so a member learns nothing of which backups exist; the
	// API, the console and the CLI through a gateway all come here
	// [TestExportRecordIsForAdmins, TestActionsNeedCSRFAndConfirmation].
	if _, err := adminOf(ctx, "export a backup's record (policy backup:backup-export)"); err != nil {
		return nil, err
	}
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	if b.Status != index.BackupAvailable {
		return nil, wrapf(ErrConflict, "backup %s is %s: only an available backup can be exported", b.ID, b.Status)
	}
	m, err := s.repo.GetManifest(ctx, b.ID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	url, err := s.repo.ExportURL(m)
	if err != nil {
		return nil, err
	}
	return &Export{BackupService: s.driver, BackupURL: url}, nil
}

// ImportBackup makes an exported backup known to this index again (seed 3.5.2). Each backup
// is self-contained, so an imported incremental restores even if its parent was not imported.
func (s *Service) ImportBackup(ctx context.Context, service, url string) (*index.Backup, error) {
	if _, err := adminOf(ctx, "import a backup"); err != nil {
		return nil, err
	}
	if service != s.driver {
		return nil, invalidf("backup service %q does not match this repository's %q: import into a repository of the same kind", service, s.driver)
	}
	rec, err := s.repo.ParseExportURL(url)
	if err != nil {
		return nil, wrapf(ErrInvalid, "%v", err)
	}
	m := rec.Manifest
	if _, err := s.idx.Backup(m.ID); err == nil {
		// The index follows the repository's manifests: after losing the index, a backup
		// whose manifest is stored comes back by itself.
		return nil, wrapf(ErrExists, "backup %s already exists (the index follows the repository): nothing to import", m.ID)
	}
	// Under a shared lock no gc runs: the blobs found below stay until the manifest protects them.
	lk, err := s.repo.Lock(ctx, repo.LockShared, "import")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if err := s.repo.Verify(ctx, m); err != nil && (errors.Is(err, backend.ErrUnavailable) || ctx.Err() != nil) {
		// An outage or a cancel says nothing of the backup: not "invalid", try again
		// [TestImportDuringAnOutageSaysUnavailable].
		return nil, fmt.Errorf("backup %s cannot be imported now: %w", m.ID, err)
	} else if err != nil {
		return nil, wrapf(ErrInvalid, "backup %s cannot be imported: %v (was it deleted and garbage-collected?)", m.ID, err)
	}
	has, err := s.repo.HasManifest(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	dropReservation, imported := func() {}, false
	defer func() {
		if !imported {
			dropReservation()
		}
	}()
	var cl *repo.Lock // the manifest's claim, for a backup new to the repository
	if !has {
		// A backup new to the repository joins its project as a created one does: it counts
		// against the project's quota, and over it nothing is stored (Cinder reserves backups
		// and backup_gigabytes for an import too). The quota lock holds until its record is
		// written [TestImportHoldsToTheQuota].
		project := m.Project
		if project == "" {
			project = DefaultProject
		}
		release, drop, err := s.reserveQuota(ctx, project, m.ID, m.Size)
		if err != nil {
			return nil, fmt.Errorf("import backup %s: %w", m.ID, err)
		}
		defer release()
		dropReservation = drop
		// One commit of the backup at a time across gateways, from a second look for its
		// manifest to its store or withdrawal (claimManifest), taken after the quota as a copy
		// takes them: two imports of one export that both found it missing both stored it,
		// and the one whose lock was lost withdrew the other's committed manifest (the id is
		// the export's, not a new one), as two copies did
		// [TestACopyDoesNotWithdrawAnotherCommittedMeanwhile].
		if cl, err = s.claimManifest(ctx, m.ID); err != nil {
			return nil, err
		}
		defer cl.Unlock()
		if has, err = s.repo.HasManifest(ctx, m.ID); err != nil {
			return nil, err
		}
		if has {
			// Committed by another import since the first look: taken as stored, under its
			// reservation.
			dropReservation()
			dropReservation = func() {}
		}
	}
	if has {
		// The stored manifest is the truth: the URL's copy may predate a rename, a protect or
		// a re-linked parent [TestImportOfAnOldURLTakesTheStoredManifest].
		if m, err = s.repo.GetManifest(ctx, m.ID); err != nil {
			return nil, fmt.Errorf("backup %s: %w", rec.Manifest.ID, err)
		}
	} else {
		// The blobs verified above stay only while the lock holds: once it is lost a gc
		// elsewhere may have removed them [TestImportStoresNothingOnceItsLockIsLost], and so
		// once its object is gone, refreshed on time or not
		// [TestImportStoresNothingOnceItsLockObjectIsGone].
		if err := lk.Confirm(ctx); err != nil {
			return nil, fmt.Errorf("import backup %s: %w", m.ID, err)
		}
		if err := cl.Check(); err != nil {
			return nil, fmt.Errorf("import backup %s: its commit claim: %w", m.ID, err)
		}
		// Imported on purpose: a tombstone of an earlier delete must not undo it.
		if err := s.repo.Undelete(ctx, m.ID); err != nil {
			return nil, err
		}
		// A Put that failed may have landed (its answer lost). Landed while the lock held
		// (checked below), it is as good as one acknowledged: the import goes on and the
		// backup is adopted under its quota. Left as a failed import, the next catch-up
		// adopted it past the quota; withdrawn, it could be another gateway's import of the
		// same backup, committed meanwhile (the id is the export's, not a new one)
		// [TestAnImportWhosePutLostItsAnswerIsImported]. Whether it landed is asked on a
		// context of its own (a caller that gave up must not make the answer "cannot tell");
		// one that cannot be told is left for the catch-up, under a reservation held for as
		// long as a catch-up takes to learn it.
		var untold error
		if err := s.repo.PutManifest(ctx, m); err != nil {
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
			landed, herr := s.repo.HasManifest(hctx, m.ID)
			cancel()
			switch {
			case herr != nil:
				untold = fmt.Errorf("import backup %s: %w; whether its manifest landed cannot be told (%v): the next catch-up adopts it if it did", m.ID, err, herr)
			case !landed:
				return nil, fmt.Errorf("import backup %s: %w", m.ID, err)
			}
		}
		// As a backup's commit: a Put that landed after the lock may have gone stale is
		// withdrawn (design.md, "A manifest that lands late").
		if err := lk.Check(); err != nil {
			return nil, fmt.Errorf("import backup %s: %w", m.ID, s.withdrawManifest(m.ID, err))
		}
		if untold != nil {
			keep := dropReservation
			dropReservation = func() { time.AfterFunc(reservationGrace, keep) }
			return nil, untold
		}
	}
	b, err := s.adoptManifest(ctx, m)
	if errors.Is(err, ErrExists) {
		// This gateway's catch-up adopted the manifest first: imported all the same
		// [TestImportThatTheCatchUpAdoptsFirstSucceeds].
		b, err = s.idx.Backup(m.ID)
	}
	if err != nil {
		return nil, err
	}
	// Other gateways count it as a reservation until they have learned its manifest.
	imported = true
	time.AfterFunc(reservationGrace, dropReservation)
	s.notifyChange()
	s.syncIndex()
	s.log.Info("backup imported", "backup_id", b.ID, "volume_id", b.VolumeID)
	return b, nil
}

// blockMapUnknown is adoptManifest's error for a manifest whose root the index does not
// locate: garbage-collected, or in packs this index has not learned yet (SyncBackups).
type blockMapUnknown struct{ error }

func (e *blockMapUnknown) Unwrap() error { return e.error }

// adoptManifest records a stored backup (and its volume, if unknown) as available.
func (s *Service) adoptManifest(ctx context.Context, m *repo.Manifest) (*index.Backup, error) {
	if deleted, err := s.repo.Deleted(ctx, m.ID); err != nil {
		return nil, err
	} else if deleted {
		// Its delete began and did not finish (its deleter crashed, or its store failed):
		// the deleter, or a rewrite, finishes it.
		return nil, wrapf(ErrConflict, "backup %s is being deleted", m.ID)
	}
	if !m.Root.IsZero() {
		if _, ok, err := s.idx.Lookup(m.Root); err != nil {
			return nil, err
		} else if !ok {
			return nil, &blockMapUnknown{wrapf(ErrInvalid, "backup %s: its block map is not in the repository (was it deleted and garbage-collected?)", m.ID)}
		}
	}
	if err := s.ensureVolume(ctx, m); err != nil {
		return nil, err
	}
	b := recordOf(m)
	if err := s.resolveParent(ctx, b); err != nil {
		return nil, err
	}
	if err := s.idx.CreateBackup(b); err != nil {
		if errors.Is(err, index.ErrExists) {
			return nil, wrapf(ErrExists, "backup %s is already in the index", m.ID)
		}
		return nil, err
	}
	return b, nil
}

// recordOf is the index record of a committed backup as its manifest says it.
func recordOf(m *repo.Manifest) *index.Backup {
	b := &index.Backup{ID: m.ID, Name: m.Name, Description: m.Description, VolumeID: m.VolumeID, Project: m.Project,
		VolumeName: m.VolumeName, VolumePath: m.VolumePath, VolumeIdentity: m.VolumeIdentity, Metadata: m.Metadata, UserID: m.UserID,
		Status: index.BackupAvailable, Size: m.Size, IsIncremental: m.Incremental, ParentID: m.ParentID,
		SnapshotID: m.SnapshotID, Root: m.Root, RootLevel: m.RootLevel, Stats: m.Stats, CreatedAt: m.CreatedAt, UpdatedAt: m.Updated(),
		Protected: m.Protected, ReadMode: m.ReadMode, ReadFallback: m.ReadFallback, LastVerify: m.Verified, LastRestore: m.Restored,
		Copies: m.Copies}
	if m.Error != "" {
		b.Status, b.FailReason = index.BackupError, m.Error // an admin's reset-state
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = now()
	}
	if b.Project == "" {
		b.Project = DefaultProject
	}
	return b
}

// resolveParent handles an adopted incremental whose parent is gone from the repository (a
// prune elsewhere removed it while this backup ran, or before its manifest was rewritten):
// as prune would have done, the nearest older available backup of the volume in its project
// becomes its parent, or it becomes the base of its chain. Its block map is self-contained,
// so only the chain's bookkeeping changes, never what it restores.
func (s *Service) resolveParent(ctx context.Context, b *index.Backup) error {
	if b.ParentID == "" {
		return nil
	}
	if _, err := s.idx.Backup(b.ParentID); err == nil {
		return nil
	}
	if has, err := s.repo.HasManifest(ctx, b.ParentID); err != nil || has {
		return err
	}
	all, err := s.idx.VolumeBackups(b.VolumeID)
	if err != nil {
		return err
	}
	var best *index.Backup
	for _, o := range all {
		if o.Project == b.Project && o.Status == index.BackupAvailable && o.CreatedAt.Before(b.CreatedAt) &&
			(best == nil || o.CreatedAt.After(best.CreatedAt)) {
			best = o
		}
	}
	b.ParentID, b.IsIncremental = "", false
	if best != nil {
		b.ParentID, b.IsIncremental = best.ID, true
	}
	return nil
}

// ensureVolume registers the backup's volume from its record in the repository when the
// index lacks it. A volume without one was forgotten (unmanaged, or deleted while its backups
// stay: forgetVolume removes the record), and its backups stay without it, as they were on the
// gateway that forgot it. Made again from the manifest, such a volume came back after a lost
// index, or on another gateway, at its old path and in the backup's project, which may not
// be the volume's: that project could then back up or restore over another project's disk
// [TestLostIndexBringsNoForgottenVolumeBack].
func (s *Service) ensureVolume(ctx context.Context, m *repo.Manifest) error {
	// learnVolume reads the record under volumeRecMu: one read without it may be that of a
	// volume being forgotten here [TestCatchUpDuringAnUnmanageDoesNotBringTheVolumeBack].
	_, err := s.learnVolume(ctx, m.VolumeID)
	return err
}
