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

// Restores running, on every gateway (docs/design.md, "Backups being created, on every
// gateway"): the gateway that accepts a restore stores meta/restoring/<hex backup id> and
// rewrites it while the restore runs; the others show the backup restoring and its target
// volume restoring-backup, from memory, while the object is fresh.
const (
	metaRestoring     = repo.MetaRestoring
	metaRestoreCancel = repo.MetaRestoreCancel
)

// restoringObject is meta/restoring/<backup id>: a restore of the backup, running on Host.
type restoringObject struct {
	BackupID string    `json:"backup_id"`
	VolumeID string    `json:"volume_id,omitempty"` // the target, when it is a volume
	Target   string    `json:"target"`
	Host     string    `json:"host"`
	Gateway  string    `json:"gateway"` // gatewayName: one this gateway finds of its own is a leftover
	At       time.Time `json:"at"`      // when it started: its running outcome's time
	// Process is the gateway's process: one of this host found gone shows the restore as
	// its records stand at once (docs/design.md, "A gateway process of the same host that is gone").
	Process repo.Process `json:"process,omitzero"`
}

// restoringElsewhere is a restore another gateway runs, as this one shows it: written is
// its object's last write by the store's clock; gone, that its process (of this host) was
// found gone.
type restoringElsewhere struct {
	obj     restoringObject
	written time.Time
	gone    bool
	// cancelled: a reset-state through this gateway asked its gateway to cancel it.
	cancelled bool
}

// restoreCancelRequest is meta/restore-cancel/<backup id>: a reset-state through another
// gateway of a backup being restored, asking the gateway that runs the restore to cancel it
// (docs/design.md, "A restore cancelled through another gateway"). Gateway and Started name
// the restore, as its object does: a request never cancels another restore of the backup.
type restoreCancelRequest struct {
	BackupID string    `json:"backup_id"`
	Gateway  string    `json:"gateway"`
	Started  time.Time `json:"started"`
	By       string    `json:"by"`
	Host     string    `json:"host"`
	At       time.Time `json:"at"`
}

// names says whether the request is for restore o.
func (r *restoreCancelRequest) names(o *restoringObject) bool {
	return r.BackupID == o.BackupID && r.Gateway == o.Gateway && r.Started.Equal(o.At)
}

// fresh says whether its gateway wrote it within creatingStale of storeNow (the store's time
// now; or it was read for a show) and its process was not found gone: another is a restore
// whose gateway stopped, and the records say how it was left.
func (r *restoringElsewhere) fresh(storeNow time.Time) bool {
	return !r.gone && (r.written.IsZero() || storeNow.Sub(r.written) <= creatingStale)
}

// storeRestoring stores the object of a restore this gateway accepted, before the restore
// returns (keepRestoring rewrites it). Best effort: a failure is logged, and other gateways
// show the restore's end.
func (s *Service) storeRestoring(ctx context.Context, o *restoringObject) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	if err := s.repo.PutMeta(ctx, metaRestoring, o.BackupID, o); err != nil {
		s.log.Warn("cannot store a running restore in the repository; other gateways show it once it ends", "backup_id", o.BackupID, "error", err)
	}
}

// keepRestoring rewrites restore o's object every creatingRefresh until ctx ends, and looks
// for a request to cancel the restore every cancelLook, calling cancel when one names it (the
// job looked once as it began).
func (s *Service) keepRestoring(ctx context.Context, o *restoringObject, cancel context.CancelFunc) {
	s.watchJob(ctx, func(ctx context.Context) { s.lookForRestoreCancel(ctx, o, cancel) },
		func(ctx context.Context) { s.storeRestoring(ctx, o) })
}

// lookForRestoreCancel calls cancel when a request to cancel restore o is stored. A request
// that cannot be read is logged and taken for none: the next look reads it.
func (s *Service) lookForRestoreCancel(ctx context.Context, o *restoringObject, cancel context.CancelFunc) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	var req restoreCancelRequest
	err := s.repo.GetMeta(ctx, metaRestoreCancel, o.BackupID, &req)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return
	case err != nil:
		if ctx.Err() == nil {
			s.log.Warn("cannot look for a request to cancel a running restore", "backup_id", o.BackupID, "error", err)
		}
		return
	case !req.names(o):
		return // for an earlier restore of the backup: a full catch-up removes it
	}
	s.jobs.logf("restore/"+o.BackupID, "cancelled by %s through the gateway on %s (reset-state)", req.By, req.Host)
	s.log.Info("restore cancelled through another gateway", "backup_id", o.BackupID, "by", req.By, "through", req.Host)
	cancel()
}

// requestRestoreCancel is a reset-state of backup b, which another gateway is restoring (e, as
// this one shows it): it stores the request that gateway acts on. The reset goes on only once
// the request is stored.
func (s *Service) requestRestoreCancel(ctx context.Context, b *index.Backup, e *restoringElsewhere) error {
	c, err := callerOf(ctx)
	if err != nil {
		return err
	}
	req := restoreCancelRequest{BackupID: b.ID, Gateway: e.obj.Gateway, Started: e.obj.At, By: c.User, Host: hostName(), At: now()}
	if err := s.repo.PutMeta(ctx, metaRestoreCancel, b.ID, &req); err != nil {
		return fmt.Errorf("store the request to cancel the restore of backup %s through the gateway on %s (nothing was reset): %w", b.ID, e.obj.Host, err)
	}
	s.elsewhereMu.Lock()
	if cur := s.restoringAt[b.ID]; cur != nil && cur.obj.Gateway == req.Gateway && cur.obj.At.Equal(req.Started) {
		cur.cancelled = true // the entry now shown: a catch-up may have replaced e since
	}
	s.elsewhereMu.Unlock()
	s.log.Info("cancel of a restore running through another gateway requested", "backup_id", b.ID, "runs_on", e.obj.Host, "by", c.User)
	return nil
}

// restoringElsewhereOf returns the restore of backup id that another gateway runs, as this one
// shows it (fresh), or nil.
func (s *Service) restoringElsewhereOf(id string) *restoringElsewhere {
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	if e := s.restoringAt[id]; e != nil && e.fresh(s.storeNow()) {
		return e
	}
	return nil
}

// removeRestoring removes the object of backup id's restore, and any request to cancel it,
// once its end (the backup's outcome in its manifest, the volume's record) is stored.
func (s *Service) removeRestoring(id string) {
	s.removeJobObjects(id, metaRestoring, metaRestoreCancel)
}

// removeRestoreCancels removes the requests (listed before the restores) whose restore ended:
// its object is not in the restores' listing.
func (s *Service) removeRestoreCancels(ctx context.Context, requests map[string]bool, restoring map[string]time.Time) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	for id := range requests {
		if _, ok := restoring[id]; !ok {
			s.repo.DeleteMeta(ctx, metaRestoreCancel, id) // best effort: the next full catch-up tries again
		}
	}
}

// showRestoring brings what this gateway shows of restores other gateways run up to the
// listing (backup id → written). forget: entries the listing lacks are forgotten (the
// caller followed the volume records after the listing); full: objects older than
// reservationTTL (their gateway never came back) are removed too.
func (s *Service) showRestoring(ctx context.Context, listed map[string]time.Time, forget, full bool) {
	fresh := map[string]*restoringElsewhere{}
	for id, at := range listed {
		if b, err := s.idx.Backup(id); err == nil && b.Status == index.BackupRestoring {
			continue // restoring here: this gateway's own
		}
		if full && s.storeNow().Sub(at) > reservationTTL {
			if !s.cfg.ReadOnly && !s.repo.ReadOnly() {
				s.repo.DeleteMeta(ctx, metaRestoring, id) // best effort
			}
			continue
		}
		s.elsewhereMu.Lock()
		e := s.restoringAt[id]
		cancelled := e != nil && e.cancelled
		s.elsewhereMu.Unlock()
		if e == nil || !e.written.Equal(at) {
			// Read again once rewritten: a later restore of the backup (one that began after
			// the last look, the shown one having ended) may have taken the key.
			var o restoringObject
			err := s.repo.GetMeta(ctx, metaRestoring, id, &o)
			switch {
			case err == nil && o.BackupID == id:
				if e == nil || e.obj.Gateway != o.Gateway || !e.obj.At.Equal(o.At) {
					cancelled = false // a cancel requested here was for another restore
				}
				e = &restoringElsewhere{obj: o}
			case e != nil && err != nil && !errors.Is(err, backend.ErrNotFound):
				s.log.Warn("record of a restore running elsewhere not read again; shown as last read", "backup_id", id, "error", err)
			default:
				if err != nil && !errors.Is(err, backend.ErrNotFound) {
					s.log.Warn("record of a restore running elsewhere skipped", "backup_id", id, "error", err)
				}
				continue
			}
		}
		if e.obj.Gateway == s.gatewayName() {
			// This gateway's own, and not restoring here (above): a leftover whose removal
			// failed (the store was down as the restore ended), removed now. Shown, it made
			// this gateway refuse its own next restore of the backup for ten minutes.
			s.removeRestoring(id)
			continue
		}
		fresh[id] = &restoringElsewhere{obj: e.obj, written: at, gone: s.repo.ProcessGone(e.obj.Process), cancelled: cancelled}
	}
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	if s.restoringAt == nil {
		s.restoringAt = map[string]*restoringElsewhere{}
	}
	for id := range s.restoringAt {
		if forget && fresh[id] == nil {
			delete(s.restoringAt, id)
		}
	}
	for id, e := range fresh {
		s.restoringAt[id] = e
	}
}

// restoresEnded says whether a restore this gateway shows running elsewhere is not in the
// listing: it ended.
func (s *Service) restoresEnded(listed map[string]time.Time) bool {
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	for id := range s.restoringAt {
		if _, ok := listed[id]; !ok {
			return true
		}
	}
	return false
}

// lookRestoring lists the restores other gateways run, between catch-ups: a volume learned
// on a show is often a restore's new volume.
func (s *Service) lookRestoring(ctx context.Context) {
	listed := map[string]time.Time{}
	if err := s.repo.ListMetaTimes(ctx, metaRestoring, func(id string, at time.Time) error { listed[id] = at; return nil }); err != nil {
		s.log.Warn("cannot list the restores running through other gateways", "error", err)
		return
	}
	s.showRestoring(ctx, listed, false, false)
}

// restoreRunsElsewhere returns the object of another gateway's restore of backup id while
// this gateway shows it as running (fresh, and not cancelled here: as the reset left it).
// backupShown and prune's removal ask it alike.
func (s *Service) restoreRunsElsewhere(id string) (restoringObject, bool) {
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	if e := s.restoringAt[id]; e != nil && e.fresh(s.storeNow()) && !e.cancelled {
		return e.obj, true
	}
	return restoringObject{}, false
}

// backupShown is backup b as this gateway shows it: restoring while another gateway's
// restore of it runs.
func (s *Service) backupShown(b *index.Backup) *index.Backup {
	if b.Status != index.BackupAvailable {
		return b
	}
	obj, ok := s.restoreRunsElsewhere(b.ID)
	if !ok {
		return b
	}
	shown := *b
	shown.Status, shown.RestoreTarget = index.BackupRestoring, obj.VolumeID
	shown.LastRestore = &index.RestoreOutcome{Target: obj.Target + " (through the gateway on " + obj.Host + ")", Result: repo.RestoreRunning, At: obj.At}
	return &shown
}

// volumeShown is volume v as this gateway shows it: restoring-backup while another gateway's
// restore onto it runs (its record says what a crash would leave: error).
func (s *Service) volumeShown(v *index.Volume) *index.Volume {
	if v.Status.Busy() {
		return v
	}
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	for _, e := range s.restoringAt {
		if e.obj.VolumeID == v.ID && e.fresh(s.storeNow()) {
			shown := *v
			shown.Status, shown.FailReason = index.VolumeRestoringBackup, ""
			return &shown
		}
	}
	return v
}
