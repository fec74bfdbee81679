package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Restores running, on every gateway (docs/design.md, "Backups being created, on every
// gateway"): the gateway that accepts a restore stores meta/restoring/<hex backup id> and
// rewrites it while the restore runs; the others show the backup restoring and its target
// volume restoring-backup, from memory, while the object is fresh.
const metaRestoring = repo.MetaRestoring

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
}

// fresh says whether its gateway wrote it within creatingStale (or it was read for a show)
// and its process was not found gone: another is a restore whose gateway stopped, and the
// records say how it was left.
func (r *restoringElsewhere) fresh() bool {
	return !r.gone && (r.written.IsZero() || now().Sub(r.written) <= creatingStale)
}

// storeRestoring stores the object of a restore this gateway accepted, before the restore
// returns, and keepRestoring rewrites it every creatingRefresh until ctx ends. Both are best
// effort: a failure is logged, and other gateways show the restore's end.
func (s *Service) storeRestoring(ctx context.Context, o *restoringObject) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	if err := s.repo.PutMeta(ctx, metaRestoring, o.BackupID, o); err != nil {
		s.log.Warn("cannot store a running restore in the repository; other gateways show it once it ends", "backup_id", o.BackupID, "error", err)
	}
}

func (s *Service) keepRestoring(ctx context.Context, o *restoringObject) {
	t := time.NewTicker(creatingRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.storeRestoring(ctx, o)
		}
	}
}

// removeRestoring removes the object of backup id's restore, once its end (the backup's
// outcome in its manifest, the volume's record) is stored.
func (s *Service) removeRestoring(id string) { s.removeJobObjects(id, metaRestoring) }

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
		if full && now().Sub(at) > reservationTTL {
			if !s.cfg.ReadOnly && !s.repo.ReadOnly() {
				s.repo.DeleteMeta(ctx, metaRestoring, id) // best effort
			}
			continue
		}
		s.elsewhereMu.Lock()
		e := s.restoringAt[id]
		s.elsewhereMu.Unlock()
		if e == nil {
			var o restoringObject
			if err := s.repo.GetMeta(ctx, metaRestoring, id, &o); err != nil || o.BackupID != id {
				if err != nil && !errors.Is(err, backend.ErrNotFound) {
					s.log.Warn("record of a restore running elsewhere skipped", "backup_id", id, "error", err)
				}
				continue
			}
			e = &restoringElsewhere{obj: o}
		}
		if e.obj.Gateway == s.gatewayName() {
			// This gateway's own, and not restoring here (above): a leftover whose removal
			// failed (the store was down as the restore ended), removed now. Shown, it made
			// this gateway refuse its own next restore of the backup for ten minutes.
			s.removeRestoring(id)
			continue
		}
		fresh[id] = &restoringElsewhere{obj: e.obj, written: at, gone: s.repo.ProcessGone(e.obj.Process)}
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

// backupShown is backup b as this gateway shows it: restoring while another gateway's
// restore of it runs.
func (s *Service) backupShown(b *index.Backup) *index.Backup {
	if b.Status != index.BackupAvailable {
		return b
	}
	s.elsewhereMu.Lock()
	e := s.restoringAt[b.ID]
	s.elsewhereMu.Unlock()
	if e == nil || !e.fresh() {
		return b
	}
	shown := *b
	shown.Status, shown.RestoreTarget = index.BackupRestoring, e.obj.VolumeID
	shown.LastRestore = &index.RestoreOutcome{Target: e.obj.Target + " (through the gateway on " + e.obj.Host + ")", Result: repo.RestoreRunning, At: e.obj.At}
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
		if e.obj.VolumeID == v.ID && e.fresh() {
			shown := *v
			shown.Status, shown.FailReason = index.VolumeRestoringBackup, ""
			return &shown
		}
	}
	return v
}
