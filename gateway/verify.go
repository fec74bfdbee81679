package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/units"
)

// VerifyResult is what a verification of one backup found.
type VerifyResult struct {
	BackupID string `json:"backup_id"`
	Name     string `json:"name,omitempty"`
	Size     int64  `json:"size"`
	// Result is "ok" (every block read and matched its address) or "damaged".
	Result string `json:"result"`
	// Lost are the byte ranges a restore could not write (damaged or missing blocks, or
	// block map nodes), merged and sorted.
	Lost      [][2]int64 `json:"lost,omitempty"`
	LostBytes int64      `json:"lost_bytes"`
	Seconds   float64    `json:"seconds"`
}

// discard is a restore target that keeps nothing: a verification reads and checks every
// block as a restore does, and writes nowhere.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discard) Zero(int64, int64) error                { return nil }

// VerifyBackup reads every block of a backup and checks it against its address, as a restore
// does, and writes nothing: whether the backup restores, without a target and cheaper than
// reading the whole repository ('repo check --read-data'). Damage does not stop it: every
// lost range is listed, and the result is an ErrCorrupt error beside the report.
func (s *Service) VerifyBackup(ctx context.Context, ref string, progress func(done, total int64)) (*VerifyResult, error) {
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := verifiable(b); err != nil {
		return nil, err
	}
	m, err := s.manifestOf(ctx, b)
	if err != nil {
		return nil, err
	}
	// A verification of a large backup takes long: it waits out a store's restart, as a
	// restore and a check do (it writes nothing, so a late request is harmless).
	ctx = backend.Patient(ctx)
	res := &VerifyResult{BackupID: b.ID, Name: b.Name, Size: b.Size, Result: repo.VerifyOK}
	var mu sync.Mutex
	var lostBlocks []repo.Address // the lost data blocks, while every lost range is one
	unknown := false
	start := time.Now()
	err = s.repo.Restore(ctx, m, discard{}, repo.RestoreOptions{Fresh: true, FromStore: true, Progress: progress,
		Lost: func(lo, hi int64, why error) {
			s.log.Warn("verify: range lost", "backup_id", b.ID, "start", lo, "end", hi, "error", why)
			mu.Lock()
			addRange(&res.Lost, &res.LostBytes, lo, hi)
			var lb *repo.LostBlockError
			if errors.As(why, &lb) && len(lostBlocks) < repo.MaxLostBlocks {
				lostBlocks = append(lostBlocks, lb.Addr)
			} else {
				unknown = true
			}
			mu.Unlock()
		}})
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		return nil, err
	}
	if res.LostBytes > 0 {
		res.Result = repo.VerifyDamaged
	}
	outcome := &index.VerifyOutcome{Result: res.Result, LostBytes: res.LostBytes, At: now()}
	if res.LostBytes > 0 && !unknown {
		slices.SortFunc(lostBlocks, func(a, b repo.Address) int { return bytes.Compare(a[:], b[:]) })
		outcome.LostBlocks = slices.Compact(lostBlocks)
	}
	s.recordVerify(ctx, b.ID, outcome)
	if res.LostBytes > 0 {
		s.log.Error("backup verification found damage", "backup_id", b.ID, "lost_bytes", res.LostBytes, "ranges", len(res.Lost))
		return res, fmt.Errorf("backup %s: %w: %d bytes in %d ranges cannot be restored: 'cairn repo repair' stores lost blocks again from volumes that still hold them", b.ID, repo.ErrCorrupt, res.LostBytes, len(res.Lost))
	}
	s.log.Info("backup verified", "backup_id", b.ID, "seconds", res.Seconds)
	return res, nil
}

// recordVerify keeps a verification's outcome in the backup's manifest, so every gateway and an
// index rebuilt show it (the catch-up's relearn takes it), then in its record. Neither failing
// undoes the verification: a failure is logged, and a read-only service keeps it in the
// index alone [TestVerifyOutcomeIsInTheRepository].
func (s *Service) recordVerify(ctx context.Context, id string, outcome *index.VerifyOutcome) {
	s.recordVerifyOver(ctx, id, outcome, nil)
}

// recordVerifyOver is recordVerify that, when over is not nil, replaces only the outcome over
// (recordMended's): a verification recorded since, here or in the manifest by another
// gateway, stays.
func (s *Service) recordVerifyOver(ctx context.Context, id string, outcome, over *index.VerifyOutcome) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	b, err := s.idx.Backup(id)
	if err != nil {
		s.log.Warn("verify: cannot record the outcome", "backup_id", id, "error", err) // deleted meanwhile
		return
	}
	replaces := func(v *index.VerifyOutcome) bool {
		return over == nil || v != nil && v.At.Equal(over.At) && v.Result == over.Result
	}
	if !replaces(b.LastVerify) {
		return
	}
	at := s.outcomeToManifest(ctx, id, "verify", func(m *repo.Manifest) {
		if over != nil {
			if replaces(m.Verified) {
				m.Verified = outcome
			}
			return
		}
		if m.Verified == nil || !m.Verified.At.After(outcome.At) {
			m.Verified = outcome
		}
	})
	if _, err := s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		if !replaces(rec.LastVerify) {
			return errUnchanged
		}
		rec.LastVerify = outcome
		stampUpdated(rec, at)
		return nil
	}); err != nil && !errors.Is(err, errUnchanged) {
		s.log.Warn("verify: cannot record the outcome", "backup_id", id, "error", err)
	}
}

// recordRestore puts a restore's outcome, which its record holds now, into the backup's
// manifest, so every gateway and a rebuilt index show it (docs/design.md)
// [TestRestoreOutcomeIsInTheRepository].
func (s *Service) recordRestore(ctx context.Context, id string, outcome *index.RestoreOutcome) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	at := s.outcomeToManifest(ctx, id, "restore", func(m *repo.Manifest) {
		if m.Restored == nil || !m.Restored.At.After(outcome.At) {
			m.Restored = outcome
		}
	})
	if at.IsZero() {
		return
	}
	if _, err := s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		stampUpdated(rec, at)
		return nil
	}); err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Warn("restore: cannot record its time in the index", "backup_id", id, "error", err)
	}
}

// recordCopy puts a copy of backup id into another repository in the backup's manifest, so
// that a copy of every backup there leaves it once that repository has deleted it
// (CopyOptions.SkipDeletedThere), on every gateway and after a rebuilt index. The index takes
// it only once the manifest has it (or the service is read-only): a copy whose record did not
// land is recorded by the next copy that finds it there. Before, the index alone kept it, so
// no later copy recorded it, and every other gateway and a rebuilt index, which read the
// manifest, copied the backup again once the destination had pruned it
// [TestACopyWhoseRecordDidNotLandIsRecordedLater].
func (s *Service) recordCopy(ctx context.Context, id string, c repo.CopyRecord) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	at := s.outcomeToManifest(ctx, id, "copy", func(m *repo.Manifest) { m.Copies = m.Copies.With(c) })
	if at.IsZero() && !s.cfg.ReadOnly {
		return
	}
	if _, err := s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		rec.Copies = rec.Copies.With(c)
		stampUpdated(rec, at)
		return nil
	}); err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Warn("copy: cannot record it in the index", "backup_id", id, "error", err)
	}
}

// outcomeToManifest rewrites backup id's manifest with set, which puts an outcome of what (a
// verification, a restore) in it unless the manifest has a newer one: another gateway's,
// stored since. A read-only service, a backup without a stored manifest here (deleted
// meanwhile, reset to error) or a rewrite that fails leaves the outcome in this index alone;
// the last is logged. It runs under manifestMu, and returns the rewrite's time (zero when there
// was none) for the caller's index update (stampUpdated).
func (s *Service) outcomeToManifest(ctx context.Context, id, what string, set func(*repo.Manifest)) time.Time {
	if s.cfg.ReadOnly {
		return time.Time{}
	}
	if b, err := s.idx.Backup(id); err != nil || !b.Status.Committed() {
		return time.Time{}
	}
	at, err := s.rewriteManifest(context.WithoutCancel(ctx), id, set)
	if err != nil {
		s.log.Warn(what+": the outcome is not in the backup's manifest: other gateways and a rebuilt index do not show it", "backup_id", id, "error", err)
	}
	return at
}

// stampUpdated sets a record's updated_at to at, the time its manifest's rewrite stamped,
// unless there was none (zero): the index's own update time would differ from what other
// gateways and a rebuilt index read in the manifest.
func stampUpdated(rec *index.Backup, at time.Time) {
	if !at.IsZero() {
		rec.UpdatedAt = at
	}
}

// verifiable refuses a backup without a stored manifest (creating, error, deleting).
func verifiable(b *index.Backup) error {
	if !b.Status.Committed() {
		return wrapf(ErrConflict, "backup %s is %s: only an available backup can be verified", b.ID, b.Status)
	}
	return nil
}

// StartVerify runs VerifyBackup as a job of the gateway (the console's Verify): its progress,
// log and result are the job's, and the ranges it finds lost are in its log. It returns the
// job's id. A backup already being verified is not verified twice at once.
func (s *Service) StartVerify(ctx context.Context, ref string) (string, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return "", err
	}
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return "", err
	}
	if err := verifiable(b); err != nil { // refused before a job is queued
		return "", err
	}
	jobID := "verify/" + b.ID
	info := JobInfo{ID: jobID, Kind: "verify", Subject: b.ID, Project: b.Project, VolumeID: b.VolumeID, Total: b.Size}
	if v, err := s.idx.Volume(b.VolumeID); err == nil {
		info.VolumeName = v.Name
	}
	if !s.jobs.addOnce(info) {
		return "", wrapf(ErrConflict, "backup %s is being verified already: see job %s", b.ID, jobID)
	}
	s.jobs.logf(jobID, "accepted: verification of backup %s (%s), by %s", b.ID, units.Bytes(b.Size), c.User)
	return jobID, s.Submit(ctx, "verify", b.ID, func(jctx context.Context) error {
		res, err := s.VerifyBackup(WithCaller(jctx, c), b.ID, s.jobProgress(jobID, nil))
		if res != nil {
			for _, l := range res.Lost {
				s.jobs.logf(jobID, "lost: bytes %d-%d", l[0], l[1])
			}
			if err == nil {
				s.jobs.logf(jobID, "every block read and checked in %.1f s: the backup restores", res.Seconds)
			}
		}
		return err
	})
}

// recordMended records a verification ok for each committed backup whose last verification
// found damage, recorded its lost blocks, and whose lost blocks were all stored again since
// (repo.Mended): the full catch-up's look (docs/design.md, "A damaged backup that a later
// backup mended says so"). A read-only service records nothing. It reports whether it
// recorded one.
func (s *Service) recordMended(ctx context.Context, all []*index.Backup) bool {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return false
	}
	changed := false
	for _, b := range all {
		lv := b.LastVerify
		if !b.Status.Committed() || !lv.Damaged() || len(lv.LostBlocks) == 0 {
			continue
		}
		ok, err := s.repo.Mended(ctx, lv.LostBlocks)
		if err != nil {
			s.log.Warn("cannot look whether a damaged backup was mended", "backup_id", b.ID, "error", err)
			return changed
		}
		if !ok {
			continue
		}
		s.recordVerifyOver(ctx, b.ID, &index.VerifyOutcome{Result: repo.VerifyOK, At: now(), Mended: true}, lv)
		s.log.Info("damaged backup mended: every block its last verification lost was stored again and verifies", "backup_id", b.ID, "blocks", len(lv.LostBlocks))
		changed = true
	}
	return changed
}
