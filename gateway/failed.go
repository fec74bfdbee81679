package gateway

import (
	"context"
	"errors"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Failed backups in the repository (docs/design.md): a failed backup has no manifest, so its
// record is stored as meta/failed/<hex id>, for every gateway on the repository and an index
// made anew.
const metaFailed = "failed"

// failedRecord says whether b is a backup that failed: status error, and not an admin's reset
// of a committed backup (that one has its manifest).
func failedRecord(b *index.Backup) bool {
	return b.Status == index.BackupError && b.FailReason != resetReason
}

// storeFailure stores backup id's record in the repository while it is a failed one, then
// records that it is stored. A failure is logged: the next full catch-up tries again.
func (s *Service) storeFailure(ctx context.Context, id string) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if err := s.storeFailureLocked(ctx, id); err != nil {
		s.log.Warn("cannot store a failed backup's record in the repository; the next full catch-up tries again", "backup_id", id, "error", err)
	}
}

// storeFailureLocked is storeFailure under manifestMu, returning its error. A delete marks
// the record deleting under manifestMu before it deletes the object, so a store after it
// finds no failed record and stores nothing.
func (s *Service) storeFailureLocked(ctx context.Context, id string) error {
	b, err := s.idx.Backup(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !failedRecord(b) || b.FailureStored {
		return nil
	}
	rec := *b
	rec.FailureStored, rec.ManifestInDoubt = true, false
	if err := s.repo.PutMeta(ctx, metaFailed, id, &rec); err != nil {
		return err
	}
	if err := s.setFailureStored(id); err != nil {
		return err
	}
	s.removeCreating(id) // after the failure object
	return nil
}

// setFailureStored sets failure_stored in backup id's record while it is a failed one, whose
// object is stored. It runs under manifestMu.
func (s *Service) setFailureStored(id string) error {
	_, err := s.idx.UpdateBackup(id, func(r *index.Backup) error {
		if !failedRecord(r) || r.FailureStored {
			return errUnchanged
		}
		r.FailureStored = true
		return nil
	})
	if errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound) {
		return nil
	}
	return err
}

// syncFailures is the full catch-up's part for failed backups: it stores the failed records
// not stored yet, learns those other gateways stored, and forgets stored ones whose object is
// gone (deleted through another gateway). all is the catch-up's reading of the records, which
// must come before the listing of meta/failed/ that this makes (the argument in
// docs/design.md), and manifests its listing of manifests: a backup with one is the
// manifest's to describe. (A failed backup's withdrawn manifest left a tombstone, so a
// tombstone says nothing here.) It reports whether a record was added or removed, and the
// names it listed.
func (s *Service) syncFailures(ctx context.Context, all []*index.Backup, manifests map[string]bool) (changed bool, listed map[string]bool, err error) {
	listed = map[string]bool{}
	if err := s.repo.ListMetaNames(ctx, metaFailed, func(id string) error { listed[id] = true; return nil }); err != nil {
		return false, nil, err
	}
	known := make(map[string]bool, len(all))
	for _, b := range all {
		known[b.ID] = true
		switch {
		case !failedRecord(b):
		case listed[b.ID]:
			if !b.FailureStored {
				// Stored by a store that did not get to set the mark (a crash): set now,
				// or a delete through another gateway would be taken for a failed store
				// and undone by storing the record again.
				s.markFailureStored(b.ID)
			}
		case !b.FailureStored:
			if !s.cfg.ReadOnly && !s.repo.ReadOnly() {
				s.storeFailure(ctx, b.ID)
			}
		default:
			gone, err := s.forgetFailure(ctx, b.ID)
			if err != nil {
				return changed, listed, err
			}
			changed = changed || gone
		}
	}
	for id := range listed {
		if known[id] || manifests[id] {
			continue
		}
		learned, err := s.learnFailure(ctx, id)
		if err != nil {
			return changed, listed, err
		}
		changed = changed || learned
	}
	return changed, listed, nil
}

// markFailureStored sets failure_stored in backup id's record while it is a failed one, its
// object being stored.
func (s *Service) markFailureStored(id string) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if err := s.setFailureStored(id); err != nil {
		s.log.Warn("cannot record that a failed backup's record is stored", "backup_id", id, "error", err)
	}
}

// learnFailure adds the failed backup another gateway stored as meta/failed/<id>.
func (s *Service) learnFailure(ctx context.Context, id string) (bool, error) {
	var rec index.Backup
	err := s.repo.GetMeta(ctx, metaFailed, id, &rec)
	if errors.Is(err, backend.ErrNotFound) {
		return false, nil // deleted since the listing
	}
	if errors.Is(err, repo.ErrCorrupt) {
		s.log.Warn("failed backup's record in the repository skipped", "backup_id", id, "error", err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rec.ID != id || !failedRecord(&rec) {
		s.log.Warn("failed backup's record in the repository skipped: it does not describe a failed backup", "backup_id", id)
		return false, nil
	}
	rec.FailureStored, rec.ManifestInDoubt, rec.RestoreTarget = true, false, ""
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if err := s.idx.CreateBackup(&rec); errors.Is(err, index.ErrExists) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	s.log.Info("failed backup recorded by another gateway learned", "backup_id", id, "volume_id", rec.VolumeID)
	return true, nil
}

// forgetFailure removes a stored failed record whose object the catch-up's listing lacks,
// once a second look does not find it either: it was deleted through another gateway.
func (s *Service) forgetFailure(ctx context.Context, id string) (bool, error) {
	found := false
	if err := s.repo.ListMetaNamesFrom(ctx, metaFailed, id, func(name string) error {
		found = found || name == id
		return nil
	}); err != nil {
		return false, err
	}
	if found {
		return false, nil
	}
	// Missing while its copy is left: lost (a delete of this cairn removes the copy first),
	// so the record stays (docs/design.md, "A metadata object lost, its copy left").
	if left, err := s.repo.MetaCopyLeft(ctx, metaFailed, id); err != nil || left {
		if left {
			s.missingRecord(metaFailed, id)
		}
		return false, err
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	return s.dropRecord(id, func(b *index.Backup) bool { return failedRecord(b) && b.FailureStored },
		"failed backup deleted elsewhere forgotten")
}
